//! PLACEHOLDER, to be replaced by the lead's version from main: external tools for tests. The
//! real `deb_tool` also extracts a missing binary from its Debian package into `target/`; this
//! one only looks on PATH, with the same signature so callers need not change.

use std::path::PathBuf;

/// `binary` from Debian's `package`, found on PATH.
pub fn deb_tool(package: &str, binary: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(binary))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{binary} is not on PATH (apt-get install {package})"))
}
