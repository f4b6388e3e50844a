//! The gateway's files are its owner's only, whatever the umask: the
//! database and its `-wal` and `-shm` hold every filer's IBAN, phone and
//! IIN, backups hold the same, and keys are keys. SQLite gives a new
//! database its default mode less the umask (0644 under the usual 022),
//! and its `-wal` and `-shm` the database file's mode, so the database
//! file is made 0600 before SQLite opens it.

use std::{
    fs::{self, DirBuilder, File, OpenOptions, Permissions},
    io,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::Path,
};

/// Creates `folder` and its missing parents, each one it makes mode 0700.
/// A folder that exists is left as it is: its mode is the operator's (the
/// Debian package's data folder is 0750, group minegate).
pub fn create_private_folder(folder: &Path) -> io::Result<()> {
    if folder.as_os_str().is_empty() || folder.is_dir() {
        return Ok(());
    }
    if let Some(parent) = folder.parent() {
        create_private_folder(parent)?;
    }
    match DirBuilder::new().mode(0o700).create(folder) {
        // The umask may have taken bits the mode asked for.
        Ok(()) => fs::set_permissions(folder, Permissions::from_mode(0o700)),
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists && folder.is_dir() => Ok(()),
        Err(error) => Err(error),
    }
}

/// Creates `folder`, mode 0700, unless it exists; its parent must exist,
/// so a mistyped path makes no tree of folders nobody asked for.
pub fn create_private_leaf(folder: &Path) -> io::Result<()> {
    if folder.is_dir() {
        return Ok(());
    }
    if let Some(parent) = folder.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.is_dir()
    {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "{} does not exist (only the last folder of the path is made)",
                parent.display()
            ),
        ));
    }
    create_private_folder(folder)
}

/// Creates `path`, which must not exist, mode 0600.
pub fn create_private_file(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.set_permissions(Permissions::from_mode(0o600))?;
    Ok(file)
}

/// Takes the group's and others' permissions off `path` if it exists and
/// has any; whether it had to.
pub fn make_private(path: &Path) -> io::Result<bool> {
    let mode = match fs::metadata(path) {
        Ok(metadata) => metadata.permissions().mode() & 0o7777,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(error) => return Err(error),
    };
    if mode & 0o077 == 0 {
        return Ok(false);
    }
    fs::set_permissions(path, Permissions::from_mode(mode & 0o700))?;
    Ok(true)
}

/// `url` with its password, if any, replaced by `***`: the userinfo's
/// (`postgres://user:secret@host/db`) and any query parameter whose name
/// has `password` in it (`?password=secret`, `sslpassword=`). For logs
/// and errors, which must never carry a secret.
pub fn redacted_url(url: &str) -> String {
    // Without a scheme (a mistyped URL) the rest is redacted all the same.
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let redacted = redacted_keywords(&format!("{scheme}{authority}{}", redacted_query(tail)));
    redacted_userinfo(&redacted)
}

/// `text` with the userinfo's password of every URL-like word in it (up
/// to an `@`, after any `scheme://`) replaced by `***`, found however the
/// URL is mistyped (`postgres:/u:pw@host`, `postgres//u:pw@host`, a `/` in
/// the password): everything after the word's first `:` up to the `@`.
fn redacted_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut from = 0;
    while let Some(at) = text[from..].find('@').map(|i| from + i) {
        let word_start = text[from..at]
            .rfind([' ', '\t', '"', '\''])
            .map_or(from, |i| from + i + 1);
        let userinfo_start = text[word_start..at]
            .find("://")
            .map_or(word_start, |i| word_start + i + 3);
        match text[userinfo_start..at]
            .find(':')
            .map(|i| userinfo_start + i)
        {
            Some(colon) if &text[colon + 1..at] != "***" && colon + 1 < at => {
                out.push_str(&text[from..=colon]);
                out.push_str("***@");
            }
            _ => out.push_str(&text[from..=at]),
        }
        from = at + 1;
    }
    out.push_str(&text[from..]);
    out
}

/// Whether a query pair (its name decoded) may carry a password.
pub fn says_password(pair: &str) -> bool {
    let name = percent_decoded(pair).to_ascii_lowercase();
    ["pass", "pwd", "secret"]
        .iter()
        .any(|word| name.contains(word))
}

/// `name` with its `%XX` escapes decoded (as far as they decode).
fn percent_decoded(name: &str) -> String {
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `text` with the value of every `…password…=VALUE` keyword (any case; a
/// value quoted with ' or " to its closing quote, else to the next space,
/// `&` or `#`) replaced by `***`: a keyword connection string (`host=db
/// user=u password=secret`) given where a URL was expected.
fn redacted_keywords(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut from = 0;
    while let Some(found) = lower[from..].find("password") {
        let key_end = from + found + "password".len();
        let Some(equals) = lower[key_end..].find('=').map(|at| key_end + at) else {
            break;
        };
        // The rest of a longer key (`password_file`), or spaces before `=`;
        // anything else means this "password" is not a key (a path, a name).
        let between = lower[key_end..equals].trim_end();
        if !between
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            out.push_str(&text[from..key_end]);
            from = key_end;
            continue;
        }
        let after = &text[equals + 1..];
        let value_start = equals + 1 + (after.len() - after.trim_start().len());
        let rest = &text[value_start..];
        let value_end = match rest.chars().next() {
            Some(quote @ ('\'' | '"')) => rest[1..]
                .find(quote)
                .map_or(text.len(), |at| value_start + at + 2),
            _ => rest
                .find([' ', '\t', '&', '#'])
                .map_or(text.len(), |at| value_start + at),
        };
        out.push_str(&text[from..value_start]);
        if value_end > value_start {
            out.push_str("***");
        }
        from = value_end;
    }
    out.push_str(&text[from..]);
    out
}

fn redacted_query(tail: &str) -> String {
    let Some((path, query)) = tail.split_once('?') else {
        return tail.to_owned();
    };
    let (query, fragment) = query
        .split_once('#')
        .map_or((query, None), |(q, f)| (q, Some(f)));
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if says_password(name) => format!("{name}=***"),
            None if says_password(pair) => "***".to_owned(),
            _ => pair.to_owned(),
        })
        .collect();
    let fragment = fragment.map(|f| format!("#{f}")).unwrap_or_default();
    format!("{path}?{}{fragment}", pairs.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_loses_its_passwords_and_keeps_the_rest() {
        let cases = [
            // Mistyped: found from outside, printed in clear before.
            (
                "postgres:/u:SECRETPW@127.0.0.1:5434/brk_x",
                "postgres:***@127.0.0.1:5434/brk_x",
            ),
            (
                "postgres://u:SEC/RET@127.0.0.1:5434/db",
                "postgres://u:***@127.0.0.1:5434/db",
            ),
            (
                "postgres://h/db?passwd=S1&pwd=S2&password%3DS3",
                "postgres://h/db?passwd=***&pwd=***&***",
            ),
            (
                "postgres//u:SECRETPW@127.0.0.1:5434/brk_x",
                "postgres//u:***@127.0.0.1:5434/brk_x",
            ),
            (
                "postgres://h/db?pass%77ord=SECRETPW&sslmode=require",
                "postgres://h/db?pass%77ord=***&sslmode=require",
            ),
            ("postgres:u:pw@h/db", "postgres:***@h/db"),
            (
                "postgres://minegate:s3cr%40t@db.example.kz:5432/minegate",
                "postgres://minegate:***@db.example.kz:5432/minegate",
            ),
            (
                "postgresql://u:p:q@h/db?sslmode=require&password=x&sslpassword=y#f",
                "postgresql://u:***@h/db?sslmode=require&password=***&sslpassword=***#f",
            ),
            ("postgres://minegate@h/db", "postgres://minegate@h/db"),
            ("postgres://h/db?user=u", "postgres://h/db?user=u"),
            ("sqlite://data/minegate.db", "sqlite://data/minegate.db"),
            ("not a url", "not a url"),
            // Found from outside: a URL missing its scheme was printed whole.
            (
                "probe23:Sekr3t%40Pw@127.0.0.1:5432/db",
                "probe23:***@127.0.0.1:5432/db",
            ),
            ("u:p@h/db?password=x", "u:***@h/db?password=***"),
            // Found from outside: a keyword connection string, and the
            // parameter in capitals, were printed whole.
            (
                "host=127.0.0.1 user=u password=hunter2 dbname=d",
                "host=127.0.0.1 user=u password=*** dbname=d",
            ),
            (
                "host=h PassWord = 'two words' dbname=d",
                "host=h PassWord = *** dbname=d",
            ),
            (
                "postgres://u@h:1/d?PASSWORD=pa55w&sslmode=require",
                "postgres://u@h:1/d?PASSWORD=***&sslmode=require",
            ),
            // A name with "password" in it that is no key stays.
            (
                "postgres://u@h/password_db?sslmode=require",
                "postgres://u@h/password_db?sslmode=require",
            ),
        ];
        for (url, shown) in cases {
            assert_eq!(redacted_url(url), shown, "{url}");
        }
    }

    #[test]
    fn files_and_folders_made_are_owner_only_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("a/b");
        create_private_folder(&folder).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!((mode(&dir.path().join("a")), mode(&folder)), (0o700, 0o700));
        let file = folder.join("f");
        create_private_file(&file).unwrap();
        assert_eq!(mode(&file), 0o600);
        fs::set_permissions(&file, Permissions::from_mode(0o644)).unwrap();
        assert!(make_private(&file).unwrap());
        assert_eq!(mode(&file), 0o600);
        assert!(!make_private(&file).unwrap());
        assert!(!make_private(&folder.join("none")).unwrap());
    }
}
