//! The gRPC methods the gateway serves, read from the descriptor sets the
//! generated services were built from (ours, health's, reflection's): the
//! only values the metrics' `method` label may take, besides [`UNKNOWN`].
//! A path is the client's to choose; a label made of it would let any
//! certificate the CA signed add series without end (issue 23).

use std::collections::BTreeSet;

use prost::Message;
use prost_types::FileDescriptorSet;

/// The label of every call to a path the gateway does not serve.
pub const UNKNOWN: &str = "unknown";

/// Paths (`/package.Service/Method`) of every RPC served.
#[derive(Debug, Clone)]
pub struct KnownMethods {
    paths: BTreeSet<String>,
}

impl KnownMethods {
    /// Every method of the services `server::start` adds: the four domain
    /// services, health, and reflection v1 and v1alpha.
    pub fn served() -> KnownMethods {
        let sets = [
            crate::proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ];
        KnownMethods {
            paths: sets.iter().flat_map(|set| paths_of(set)).collect(),
        }
    }

    /// The metrics label of a call to `path`: the path itself when the
    /// gateway serves it, else [`UNKNOWN`].
    pub fn label<'a>(&'a self, path: &str) -> &'a str {
        self.paths.get(path).map_or(UNKNOWN, String::as_str)
    }

    pub fn contains(&self, path: &str) -> bool {
        self.paths.contains(path)
    }

    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.paths.iter().map(String::as_str)
    }
}

/// The method paths of every service in an encoded descriptor set. The sets
/// are compiled in (ours by build.rs, the others by their crates), so one
/// that does not decode is a broken build, not a runtime condition.
fn paths_of(encoded: &[u8]) -> Vec<String> {
    let set = FileDescriptorSet::decode(encoded).expect("a compiled-in descriptor set decodes");
    let mut paths = Vec::new();
    for file in &set.file {
        let package = file.package();
        for service in &file.service {
            for method in &service.method {
                paths.push(format!("/{package}.{}/{}", service.name(), method.name()));
            }
        }
    }
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_method_is_known_and_nothing_else() {
        let known = KnownMethods::served();
        let per_service = |service: &str| {
            known
                .paths()
                .filter_map(|p| p.strip_prefix(&format!("/{service}/")))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            per_service("kz.digitalmining.v1.FilingService"),
            [
                "GetFiling",
                "ListRegister",
                "SubmitQuarterlyReport",
                "SubmitStartNotification",
                "SubmitTerminationNotice",
                "UploadDocument",
            ]
        );
        assert_eq!(
            per_service("kz.digitalmining.v1.EnergyExtractService"),
            ["Acknowledge", "FetchDocument", "Subscribe"]
        );
        assert_eq!(
            per_service("kz.digitalmining.v1.FinanceService"),
            ["Acknowledge", "PullQuarterlyForm"]
        );
        assert_eq!(
            per_service("kz.digitalmining.v1.ComplianceService"),
            [
                "GetCheckpoint",
                "GetConsistencyProof",
                "GetDeliveryStatus",
                "GetInclusionProof",
                "GetPendingExtracts",
                "GetSigningKeys",
                "ListFindings",
                "ListObligations",
                "VerifyLedger",
            ]
        );
        assert_eq!(per_service("grpc.health.v1.Health"), ["Check", "Watch"]);
        assert_eq!(
            per_service("grpc.reflection.v1.ServerReflection"),
            ["ServerReflectionInfo"]
        );
        assert_eq!(
            per_service("grpc.reflection.v1alpha.ServerReflection"),
            ["ServerReflectionInfo"]
        );
        assert_eq!(known.paths().count(), 6 + 3 + 2 + 9 + 2 + 1 + 1);
    }

    #[test]
    fn a_path_the_gateway_does_not_serve_is_labelled_unknown() {
        let known = KnownMethods::served();
        let check = "/grpc.health.v1.Health/Check";
        assert_eq!(known.label(check), check);
        assert_eq!(known.label("/grpc.health.v1.Health/Check2"), UNKNOWN);
        assert_eq!(known.label("/grpc.health.v1.Health/"), UNKNOWN);
        assert_eq!(known.label("grpc.health.v1.Health/Check"), UNKNOWN);
        assert_eq!(known.label(""), UNKNOWN);
    }
}
