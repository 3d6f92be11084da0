//! Owns the outside programs the tests run beside holdfast (independent clients and checkers
//! such as Python's `websockets` package, the Pusher clients for Node and Prometheus's
//! `promtool`), so that `cargo test` brings them itself on a fresh machine instead of needing a
//! manual install step. Each is taken from the machine when it is there already, and otherwise
//! fetched once with the ordinary package client (pip, npm, apt-get) into `target/tmp/tools/`,
//! where later runs find it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The `websockets` release the Python client is written against (its asyncio client API
/// arrived in 13.0).
const WEBSOCKETS: &str = "websockets==17.4";

/// The PyPI Pusher server SDK the Python publishing check is written against.
const PUSHER: &str = "pusher==3.3.4";

/// Where fetched tools live: under cargo's target directory, so `cargo clean` removes them.
fn tools_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tools")
}

/// `python3` able to `import websockets` (13.0 or newer): the machine's own when it has one,
/// otherwise with a copy installed by pip under `target/`. Panics with the cause and the fix when
/// neither pip nor (as root) apt-get can provide it.
pub fn python_with_websockets() -> Command {
    static PYTHONPATH: OnceLock<Result<Option<PathBuf>, String>> = OnceLock::new();
    let path = PYTHONPATH.get_or_init(|| {
        if python_imports(None) {
            return Ok(None);
        }
        let dir = tools_dir().join("python-websockets");
        if !python_imports(Some(&dir)) {
            pip_install_target(&dir, WEBSOCKETS)?;
        }
        if python_imports(Some(&dir)) {
            Ok(Some(dir))
        } else {
            Err(format!(
                "pip installed {WEBSOCKETS} into {} but python3 cannot import it",
                dir.display()
            ))
        }
    });
    let mut cmd = Command::new("python3");
    match path {
        Ok(Some(dir)) => {
            cmd.env("PYTHONPATH", dir);
        }
        Ok(None) => {}
        Err(e) => panic!("the Python websockets client is unavailable: {e}"),
    }
    cmd
}

fn python_imports(pythonpath: Option<&Path>) -> bool {
    let mut cmd = Command::new("python3");
    cmd.args(["-c", "import websockets.asyncio.client"]);
    if let Some(p) = pythonpath {
        cmd.env("PYTHONPATH", p);
    }
    cmd.output().is_ok_and(|o| o.status.success())
}

/// `python3` able to `import pusher` (the PyPI server SDK) at the release below, always the copy
/// installed by pip under `target/` so that the version is the one the test was written for.
/// Panics with the cause and the fix when neither pip nor (as root) apt-get can provide it.
pub fn python_with_pusher() -> Command {
    static PYTHONPATH: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let path = PYTHONPATH.get_or_init(|| {
        let dir = tools_dir().join("python-pusher");
        let version = PUSHER.trim_start_matches("pusher==");
        let check = format!(
            "import pusher, importlib.metadata as m; assert m.version('pusher') == '{version}'"
        );
        let imports = || {
            Command::new("python3")
                .args(["-c", &check])
                .env("PYTHONPATH", &dir)
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if !imports() {
            // An older release from an earlier run: replaced whole.
            let _ = std::fs::remove_dir_all(&dir);
            pip_install_target(&dir, PUSHER)?;
        }
        if imports() {
            Ok(dir)
        } else {
            Err(format!(
                "pip installed {PUSHER} into {} but python3 cannot import it",
                dir.display()
            ))
        }
    });
    let mut cmd = Command::new("python3");
    match path {
        Ok(dir) => {
            cmd.env("PYTHONPATH", dir);
        }
        Err(e) => panic!("the Python pusher SDK is unavailable: {e}"),
    }
    cmd
}

/// `pip install --target DIR REQUIREMENT`, installing pip itself from Debian first when python3
/// has none and we may (root with apt-get).
fn pip_install_target(dir: &Path, requirement: &str) -> Result<(), String> {
    let has_pip = || {
        Command::new("python3")
            .args(["-m", "pip", "--version"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !has_pip() {
        apt_install("python3-pip")
            .map_err(|e| format!("python3 has no pip, and installing python3-pip failed: {e}"))?;
    }
    // Install beside the final place and rename, so that test binaries running at the same
    // time never see a half-installed package.
    let staging = dir.with_extension(format!("partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let out = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(["--no-warn-script-location", "--target"])
        .arg(&staging)
        .arg(requirement)
        .output()
        .map_err(|e| format!("python3 -m pip: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "pip install {requirement} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    std::fs::create_dir_all(dir.parent().unwrap()).map_err(|e| e.to_string())?;
    if std::fs::rename(&staging, dir).is_err() {
        // Another test binary got there first.
        let _ = std::fs::remove_dir_all(&staging);
    }
    Ok(())
}

/// `node` able to `require` pusher-js, pusher and eventsource at the exact versions of
/// `tests/js/package-lock.json`: `npm ci` from `tests/js` into `target/tmp/tools/` once (a
/// directory named after the lockfile's contents, so a version bump installs afresh), found
/// there by later runs, and handed to node through `NODE_PATH`. Node and npm themselves are the
/// machine's, or Debian's `nodejs` and `npm` installed as root; otherwise this panics with the
/// cause and the fix.
pub fn node_with_pusher() -> Command {
    static NODE_PATH: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let path = NODE_PATH.get_or_init(|| {
        let project = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js");
        let lock = std::fs::read(project.join("package-lock.json"))
            .map_err(|e| format!("tests/js/package-lock.json: {e}"))?;
        let dir = tools_dir().join(format!("node-pusher-{:016x}", fnv1a(&lock)));
        let modules = dir.join("node_modules");
        if node_requires(&modules) {
            return Ok(modules);
        }
        for (package, binary) in [("nodejs", "node"), ("npm", "npm")] {
            if on_path(binary).is_none() {
                apt_install(package).map_err(|e| {
                    format!("there is no {binary}, and installing Debian's {package} failed: {e}")
                })?;
            }
        }
        npm_ci(&project, &dir)?;
        if node_requires(&modules) {
            Ok(modules)
        } else {
            Err(format!(
                "npm ci into {} succeeded but node cannot require pusher-js and pusher",
                dir.display()
            ))
        }
    });
    let mut cmd = Command::new("node");
    match path {
        Ok(modules) => {
            cmd.env("NODE_PATH", modules);
        }
        Err(e) => panic!("the Pusher clients for Node are unavailable: {e}"),
    }
    cmd
}

fn node_requires(modules: &Path) -> bool {
    modules.is_dir()
        && Command::new("node")
            .args([
                "-e",
                "require('pusher-js'); require('pusher'); require('eventsource')",
            ])
            .env("NODE_PATH", modules)
            .current_dir(tools_dir())
            .output()
            .is_ok_and(|o| o.status.success())
}

/// `npm ci` of `project`'s package.json and lockfile in a staging directory beside `dir`, then
/// renamed to `dir`, so that test binaries running at the same time never see a half-installed
/// tree.
fn npm_ci(project: &Path, dir: &Path) -> Result<(), String> {
    let staging = dir.with_extension(format!("partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(|e| format!("{}: {e}", staging.display()))?;
    for file in ["package.json", "package-lock.json"] {
        std::fs::copy(project.join(file), staging.join(file))
            .map_err(|e| format!("copying tests/js/{file}: {e}"))?;
    }
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&staging)
        .output()
        .map_err(|e| format!("npm: {e}"))?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(format!(
            "npm ci in a copy of tests/js failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    if std::fs::rename(&staging, dir).is_err() {
        // Another test binary got there first.
        let _ = std::fs::remove_dir_all(&staging);
    }
    Ok(())
}

/// FNV-1a, 64 bits: a name for a file's contents that stays the same across Rust releases.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A program from a Debian package: the one on PATH when the machine has it, otherwise the
/// package's copy unpacked (not installed) under `target/`, fetched with `apt-get download`.
/// Suits self-contained binaries (promtool); panics with the cause when it cannot be had.
pub fn deb_tool(package: &str, binary: &str) -> PathBuf {
    if let Some(found) = on_path(binary) {
        return found;
    }
    let root = tools_dir().join("deb").join(package);
    let unpacked = root.join("usr/bin").join(binary);
    if unpacked.is_file() {
        return unpacked;
    }
    if let Err(e) = unpack_deb(package, &root) {
        panic!("{binary} (Debian package {package}) is unavailable: {e}");
    }
    assert!(
        unpacked.is_file(),
        "Debian package {package} has no usr/bin/{binary}"
    );
    unpacked
}

/// A program that needs its package installed (shared libraries, data files), such as
/// haproxy: the machine's own, or installed with apt-get when we are root. Panics with the
/// cause and the command to run otherwise.
pub fn apt_tool(package: &str, binary: &str) -> PathBuf {
    if let Some(found) = on_path(binary) {
        return found;
    }
    if let Err(e) = apt_install(package) {
        panic!("{binary} (Debian package {package}) is unavailable: {e}");
    }
    on_path(binary).unwrap_or_else(|| panic!("installed {package} but found no {binary}"))
}

/// Searches PATH, and the sbin directories a non-root PATH may lack.
fn on_path(binary: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin"])
        .map(|d| Path::new(d).join(binary))
        .find(|p| p.is_file())
}

fn unpack_deb(package: &str, root: &Path) -> Result<(), String> {
    let downloads = tools_dir().join("deb-downloads");
    std::fs::create_dir_all(&downloads).map_err(|e| e.to_string())?;
    let download = || {
        Command::new("apt-get")
            .args(["download", "-q", package])
            .current_dir(&downloads)
            .output()
    };
    let mut out = download().map_err(|e| format!("apt-get: {e}"))?;
    if !out.status.success() && is_root() {
        // A fresh machine may have no package lists yet.
        apt_update()?;
        out = download().map_err(|e| format!("apt-get: {e}"))?;
    }
    if !out.status.success() {
        return Err(format!(
            "apt-get download {package} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let deb = std::fs::read_dir(&downloads)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{package}_")) && n.ends_with(".deb"))
        })
        .ok_or_else(|| format!("apt-get download {package} left no .deb"))?;
    // Unique per call: two tests of one binary may unpack the same package at once.
    static UNPACKS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = UNPACKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let staging = root.with_extension(format!("partial-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(|e| e.to_string())?;
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&staging))?;
    if std::fs::rename(&staging, root).is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    Ok(())
}

/// `apt-get install PACKAGE`, for a tool that cannot simply be unpacked. Root only.
fn apt_install(package: &str) -> Result<(), String> {
    if !is_root() {
        return Err(format!("not root: run `sudo apt-get install {package}`"));
    }
    // One install at a time in this process; apt's own lock (waited for) across processes.
    static APT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = APT.lock().unwrap_or_else(|e| e.into_inner());
    if dpkg_installed(package) {
        return Ok(());
    }
    let install = || {
        run(Command::new("apt-get")
            .args(["-o", "DPkg::Lock::Timeout=300"])
            .args(["install", "-y", "-qq", package])
            .env("DEBIAN_FRONTEND", "noninteractive"))
    };
    install().or_else(|_| {
        // A fresh machine may have no package lists yet.
        apt_update()?;
        install()
    })
}

fn apt_update() -> Result<(), String> {
    run(Command::new("apt-get").args(["-o", "DPkg::Lock::Timeout=300", "update", "-qq"]))
}

fn dpkg_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// The effective user is root: `/proc/self` belongs to it.
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
