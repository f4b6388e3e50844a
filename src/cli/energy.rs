//! The energy ministry's command: `minegate energy subscribe --out DIR`.
//! Each extract's evidence is verified (it is in the gateway's log, under a
//! signed checkpoint consistent with the last one seen, kept in
//! DIR/minegate-checkpoint.note: [`super::witness`]); the extract (proto3
//! JSON, with its evidence) and the documents it references are written
//! into DIR and fsynced, and only then is it acknowledged: nothing is
//! acknowledged that was not verified and written. An extract whose
//! evidence fails stops the subscriber with the reason, unacknowledged.

use std::{
    fs::{self, File},
    io::Write,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context, bail};
use clap::Subcommand;
use prost::Message;
use tokio::sync::watch;

use super::{
    ClientArgs,
    witness::{self, Announced, Witness},
};
use crate::{
    client::ClientTls,
    domain::Sha256Hex,
    evidence::verify::ArtifactKind,
    proto::v1::{
        AcknowledgeExtractRequest, DocumentRef, EnergyExtract, FetchDocumentRequest,
        SubscribeRequest, document_chunk::Part,
        energy_extract_service_client::EnergyExtractServiceClient,
    },
    tls::Role,
};

#[derive(Debug, Subcommand)]
pub enum EnergyCommand {
    /// Receive extracts into DIR: DIR/extracts/ID.json and DIR/documents/SHA256.
    Subscribe {
        /// Where to write what arrives.
        #[arg(long)]
        out: PathBuf,
        /// Exit once nothing is pending, instead of waiting for more.
        #[arg(long)]
        once: bool,
        /// Unacknowledged extracts in flight at once.
        #[arg(long, default_value_t = 16)]
        max_in_flight: u32,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// After a restore the gateway's operators announced: accept the
    /// restored log in place of the checkpoint kept in DIR, if the
    /// gateway's log continues the announced checkpoint.
    AcceptRestoredLog {
        /// The folder `subscribe --out` writes to (its minegate-checkpoint.note).
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        announced: Announced,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// Evidence that does not hold: the subscriber stops (a retry would meet
/// the same log), with the reason.
#[derive(Debug)]
pub struct Refused(pub anyhow::Error);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for Refused {}

/// A failure of evidence is final ([`Refused`]); any other (the gateway
/// unreachable, say) is retried.
fn refused_if_evidence(error: anyhow::Error) -> anyhow::Error {
    if error
        .chain()
        .any(|cause| cause.is::<crate::evidence::verify::EvidenceError>())
    {
        anyhow::Error::new(Refused(error))
    } else {
        error
    }
}

/// One extract written and acknowledged.
#[derive(Debug, Clone)]
pub struct Written {
    pub extract: EnergyExtract,
    pub attempt: u32,
    pub documents: usize,
}

/// Writes `bytes` to `path` through a temporary file, fsyncs it and its
/// folder. The file is 0600 and any folder it makes 0700, whatever the
/// umask: extracts and forms name filers.
pub fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    // A bare file name's parent is "": the current folder.
    let folder = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    crate::files::create_private_folder(folder)?;
    let tmp = path.with_extension("part");
    {
        let mut file = private_file(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    File::open(folder)?.sync_all()
}

/// `path` created or emptied, mode 0600 whatever the umask (a `.part` file
/// a stopped run left is written over).
fn private_file(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.set_permissions(fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

fn extension(media_type: &str) -> &'static str {
    match media_type {
        "application/pdf" => "pdf",
        "image/png" => "png",
        "image/jpeg" => "jpg",
        "application/xml" => "xml",
        _ => "bin",
    }
}

async fn fetch_document(
    energy: &mut EnergyExtractServiceClient<tonic::transport::Channel>,
    out: &Path,
    document: &DocumentRef,
) -> anyhow::Result<()> {
    let path = out.join("documents").join(format!(
        "{}.{}",
        document.sha256,
        extension(&document.media_type)
    ));
    if path.exists() {
        return Ok(());
    }
    let mut chunks = energy
        .fetch_document(FetchDocumentRequest {
            sha256: document.sha256.clone(),
        })
        .await
        .with_context(|| format!("fetching document {}", document.sha256))?
        .into_inner();
    // Written as it streams, hashed on the way, kept only if the digest
    // matches: a temporary file, fsynced, then renamed into place.
    let folder = path.parent().unwrap_or(Path::new("."));
    crate::files::create_private_folder(folder)?;
    let tmp = path.with_extension("part");
    let mut file = private_file(&tmp)?;
    let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
    let received = async {
        while let Some(chunk) = chunks.message().await? {
            if let Some(Part::Data(data)) = chunk.part {
                hasher.update(&data);
                file.write_all(&data)?;
            }
        }
        anyhow::Ok(())
    }
    .await;
    if let Err(error) = received {
        let _ = fs::remove_file(&tmp);
        return Err(error.context(format!("fetching document {}", document.sha256)));
    }
    if Sha256Hex::from_digest(hasher.finish()).as_str() != document.sha256 {
        let _ = fs::remove_file(&tmp);
        bail!(
            "document {} arrived with other bytes than its digest names",
            document.sha256
        );
    }
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, &path)?;
    File::open(folder)?.sync_all()?;
    Ok(())
}

/// One connection's worth: receive, verify, write, acknowledge. Returns when
/// the stream ends (caught up with `once`, or the gateway stopped).
async fn one_stream(
    tls: &ClientTls,
    out: &Path,
    once: bool,
    max_in_flight: u32,
    on_written: &mut (dyn FnMut(&Written) + Send),
) -> anyhow::Result<()> {
    let channel = tls.connect().await?;
    let mut witness = Witness::connect(channel.clone(), Witness::beside(out, true))
        .await
        .map_err(refused_if_evidence)?;
    let mut energy = EnergyExtractServiceClient::new(channel);
    let mut stream = energy
        .subscribe(SubscribeRequest {
            max_in_flight,
            until_caught_up: once,
        })
        .await?
        .into_inner();
    while let Some(delivery) = stream.message().await? {
        let Some(extract) = delivery.extract else {
            continue;
        };
        // Never acknowledged if it fails: it stays pending at the gateway,
        // and someone must look.
        witness
            .verify(ArtifactKind::Extract, extract.evidence.as_ref())
            .await
            .with_context(|| format!("extract {}: its evidence does not hold", extract.extract_id))
            .map_err(Refused)?;
        // What the log attests is the extract's bytes in the evidence: they
        // are what is written (with the evidence) and acknowledged.
        let evidence = extract.evidence.clone();
        let mut extract = EnergyExtract::decode(evidence.as_ref().map_or(&[][..], |e| &e.artifact))
            .context("the attested extract does not decode")
            .map_err(Refused)?;
        extract.evidence = evidence;
        let documents: Vec<&DocumentRef> = extract
            .customs_declaration_or_title
            .iter()
            .chain(&extract.residency)
            .chain(&extract.grid_connection_conditions)
            .collect();
        for document in &documents {
            fetch_document(&mut energy, out, document).await?;
        }
        let path = out
            .join("extracts")
            .join(format!("{}.json", extract.extract_id));
        write_durably(&path, &serde_json::to_vec_pretty(&extract)?)?;
        let ack = energy
            .acknowledge(AcknowledgeExtractRequest {
                extract_id: extract.extract_id.clone(),
            })
            .await?
            .into_inner();
        witness
            .verify(ArtifactKind::ExtractAck, ack.evidence.as_ref())
            .await
            .with_context(|| {
                format!(
                    "the acknowledgement of extract {}: its evidence does not hold",
                    extract.extract_id
                )
            })
            .map_err(Refused)?;
        on_written(&Written {
            documents: documents.len(),
            attempt: delivery.attempt,
            extract,
        });
    }
    Ok(())
}

/// Receives extracts into `out` until caught up (`once`) or until `stop` turns
/// true, reconnecting with backoff after a drop. Returns how many were written.
pub async fn subscribe(
    tls: &ClientTls,
    out: &Path,
    once: bool,
    max_in_flight: u32,
    mut stop: watch::Receiver<bool>,
    mut on_written: impl FnMut(&Written) + Send,
) -> anyhow::Result<u64> {
    let mut written = 0u64;
    let mut count = |w: &Written| {
        written += 1;
        on_written(w);
    };
    let mut backoff = Duration::from_millis(250);
    loop {
        let result = tokio::select! {
            result = one_stream(tls, out, once, max_in_flight, &mut count) => result,
            _ = stop.wait_for(|s| *s) => break,
        };
        match result {
            Ok(()) if once => break,
            Ok(()) => backoff = Duration::from_millis(250),
            Err(error) if once || error.is::<Refused>() => return Err(error),
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), ?backoff, "stream dropped; reconnecting")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
    Ok(written)
}

pub async fn run(command: EnergyCommand) -> anyhow::Result<ExitCode> {
    match command {
        EnergyCommand::Subscribe {
            out,
            once,
            max_in_flight,
            client,
        } => run_subscribe(&client.tls(Role::Energy), &out, once, max_in_flight)
            .await
            .map_err(|error| {
                witness::with_restore_hint(error, "minegate energy accept-restored-log --out DIR")
            }),
        EnergyCommand::AcceptRestoredLog {
            out,
            announced,
            client,
        } => {
            let path = Witness::beside(&out, true);
            witness::run_accept(&client.tls(Role::Energy), path, &announced).await
        }
    }
}

async fn run_subscribe(
    tls: &ClientTls,
    out: &Path,
    once: bool,
    max_in_flight: u32,
) -> anyhow::Result<ExitCode> {
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        let _ = stop.send(true);
    });
    let written = subscribe(tls, out, once, max_in_flight, stopped, |w| {
        println!(
            "{}  {}  {} (attempt {}, {} documents)",
            w.extract.extract_id, w.extract.bin_or_iin, w.extract.name, w.attempt, w.documents
        );
    })
    .await?;
    println!(
        "{written} extracts written to {} and acknowledged",
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}
