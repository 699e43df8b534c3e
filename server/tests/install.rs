//! `dist/install.sh` into a staging root (DESTDIR), and the systemd unit it installs.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn dist() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist")
}

/// A build directory holding only the daemon under test.
fn build_dir(root: &Path) -> PathBuf {
    let d = root.join("build");
    std::fs::create_dir_all(&d).expect("mkdir");
    std::fs::copy(BIN, d.join("knock-spad")).expect("copy binary");
    d
}

fn install(destdir: &Path, build: &Path, args: &[&str]) -> std::process::Output {
    Command::new("bash")
        .arg(dist().join("install.sh"))
        .args(args)
        .env("DESTDIR", destdir)
        .env("BUILD_DIR", build)
        .output()
        .expect("run install.sh")
}

#[test]
fn install_sh_stages_binaries_unit_man_page_and_completions() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let build = build_dir(tmp.path());
    let dest = tmp.path().join("root");

    // Without the client, a full install refuses (and says how to proceed).
    let out = install(&dest, &build, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--server-only"), "{}", stderr(&out));

    let out = install(&dest, &build, &["--server-only"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    for f in [
        "usr/sbin/knock-spad",
        "usr/lib/systemd/system/knock-spad.service",
        "usr/share/man/man8/knock-spad.8.gz",
        "usr/share/bash-completion/completions/knock-spad",
        "usr/share/zsh/vendor-completions/_knock-spad",
        "usr/share/fish/vendor_completions.d/knock-spad.fish",
    ] {
        let p = dest.join(f);
        let meta = std::fs::metadata(&p).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(meta.len() > 0, "{f} is empty");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dest.join("usr/sbin/knock-spad"))
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    // The staged man page is the binary's own.
    let man = Command::new("gzip")
        .args(["-dc"])
        .arg(dest.join("usr/share/man/man8/knock-spad.8.gz"))
        .output()
        .expect("gzip");
    assert!(String::from_utf8_lossy(&man.stdout).contains(".TH knock-spad 8"));
    // Nothing outside DESTDIR (no /etc/knockd.conf written, no daemon-reload).
    assert!(!dest.join("etc").exists());

    // PREFIX moves everything, including the unit's ExecStart.
    let dest2 = tmp.path().join("root2");
    let out = Command::new("bash")
        .arg(dist().join("install.sh"))
        .arg("--server-only")
        .env("DESTDIR", &dest2)
        .env("BUILD_DIR", &build)
        .env("PREFIX", "/usr/local")
        .output()
        .expect("run install.sh");
    assert!(out.status.success(), "{}", stderr(&out));
    let unit =
        std::fs::read_to_string(dest2.join("usr/local/lib/systemd/system/knock-spad.service"))
            .expect("unit");
    assert!(
        unit.contains("ExecStart=/usr/local/sbin/knock-spad -c /etc/knockd.conf"),
        "{unit}"
    );
}

/// docs/SECURITY.md quotes the unit as shipped: its `ini` block after "The unit as shipped"
/// is exactly the `[Service]` section of `dist/knock-spad.service` without blank lines and
/// comments.
#[test]
fn the_security_doc_quotes_the_shipped_unit() {
    let unit = std::fs::read_to_string(dist().join("knock-spad.service")).expect("unit");
    let mut shipped = Vec::new();
    let mut in_service = false;
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
            if in_service {
                shipped.push(line);
            }
        } else if in_service && !line.is_empty() && !line.starts_with('#') {
            shipped.push(line);
        }
    }
    let doc = std::fs::read_to_string(dist().join("../docs/SECURITY.md")).expect("SECURITY.md");
    let after = doc
        .split_once("The unit as shipped")
        .expect("SECURITY.md has \"The unit as shipped\"")
        .1;
    let block = after
        .split_once("```ini\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .expect("an ini block after it")
        .0;
    let quoted: Vec<&str> = block.lines().collect();
    assert_eq!(
        quoted, shipped,
        "docs/SECURITY.md's quoted unit differs from the shipped one"
    );
}

#[test]
fn systemd_unit_has_the_expected_settings() {
    let unit = std::fs::read_to_string(dist().join("knock-spad.service")).expect("unit");
    let settings: Vec<&str> = unit
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .collect();
    for want in [
        "Conflicts=knockd.service",
        "Type=notify",
        "NotifyAccess=main",
        "ExecStart=/usr/sbin/knock-spad -c /etc/knockd.conf",
        "ExecReload=/usr/sbin/knock-spad -c /etc/knockd.conf check",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "StateDirectory=knock-spa",
        "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK AF_PACKET",
        "WatchdogSec=60s",
        "WantedBy=multi-user.target",
    ] {
        assert!(settings.contains(&want), "unit lacks {want}");
    }
    // The state directory systemd creates is the daemon's default StateDir.
    assert_eq!(
        knock_shared::config::Options::default().state_dir,
        "/var/lib/knock-spa"
    );

    // systemd's own check, where systemd-analyze exists: the unit with ExecStart pointing at
    // the binary under test (verify insists that it exists).
    let have = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        have,
        "systemd-analyze is needed to verify the unit (Debian: apt-get install systemd; \
         scripts/test installs it)"
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("knock-spad.service");
    std::fs::write(&path, unit.replace("/usr/sbin/knock-spad", BIN)).expect("write");
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("systemd-analyze");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        stderr(&out)
    );
}
