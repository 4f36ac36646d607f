//! `kiln report` read by a real browser: Debian's headless Chromium renders the page, the test
//! reads the DOM Chromium built (build names, results, check states, package changes) and a
//! screenshot (the timeline's bars drawn in their colours). The catalog is made from a real
//! build's manifest.json (tests/fixtures/report) with versions, checks, publish records and
//! SBOMs changed per build, a failed build's directory, and a hostile image name.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

fn kiln() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// An SPDX document as kiln writes it, with these (name, version) Debian packages.
fn spdx(packages: &[(&str, &str)]) -> Value {
    let pkgs: Vec<Value> = packages
        .iter()
        .map(|(n, v)| {
            json!({
                "name": n,
                "versionInfo": v,
                "externalRefs": [{
                    "referenceCategory": "PACKAGE-MANAGER",
                    "referenceType": "purl",
                    "referenceLocator": format!("pkg:deb/debian/{n}@{v}?arch=amd64"),
                }],
            })
        })
        .collect();
    json!({"spdxVersion": "SPDX-2.3", "packages": pkgs})
}

/// A build directory NAME-VERSION of `catalog` from the fixture manifest, edited by `edit`.
fn build(
    catalog: &Path,
    name: &str,
    version: &str,
    packages: &[(&str, &str)],
    edit: impl Fn(&mut Value),
) -> PathBuf {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/report/manifest.json");
    let mut m: Value = serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
    let slug = format!("{name}-{version}");
    m["name"] = json!(name);
    m["version"] = json!(version);
    m["inventory"]["sbom"] = json!(format!("{slug}.spdx.json"));
    m["inventory"]["packages"] = json!(packages.len());
    edit(&mut m);
    // A directory name cannot hold '/': the hostile name is in the manifest only.
    let dir = catalog.join(slug.replace('/', "_"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("manifest.json"), m.to_string()).unwrap();
    std::fs::write(
        dir.join(format!("{slug}.spdx.json").replace('/', "_")),
        spdx(packages).to_string(),
    )
    .unwrap();
    dir
}

fn chromium(args: &[&str], page: &Path) -> std::process::Output {
    let home = tempfile::tempdir().unwrap();
    let o = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
        ])
        .args(args)
        .arg(format!("file://{}", page.display()))
        // Its profile in a directory of its own, not the user's.
        .env("HOME", home.path())
        .output()
        .expect("chromium (Debian's chromium package; scripts/install-deps.sh installs it)");
    assert!(o.status.success(), "{}", text(&o.stderr));
    o
}

/// Pixels of exactly this colour in a PNG.
fn pixels_of(png: &Path, rgb: [u8; 3]) -> usize {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let step = match info.color_type {
        png::ColorType::Rgba => 4,
        png::ColorType::Rgb => 3,
        other => panic!("screenshot in {other:?}"),
    };
    buf[..info.buffer_size()]
        .chunks(step)
        .filter(|p| p[..3] == rgb)
        .count()
}

#[test]
#[ignore = "needs Debian's chromium; run by scripts/test.sh"]
fn a_real_browser_shows_every_build_its_checks_changes_and_failures() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("kiln-output");
    std::fs::create_dir_all(&catalog).unwrap();
    let v1 = [
        ("bash", "5.2.15-2+b7"),
        ("curl", "7.88.1-10+deb12u7"),
        ("nano", "7.2-1"),
    ];
    let v2 = [
        ("bash", "5.2.15-2+b8"),
        ("curl", "7.88.1-10+deb12u7"),
        ("htop", "3.2.2-2"),
    ];
    build(&catalog, "web", "1.0", &v1, |m| {
        m["built_at"] = json!(1_796_600_000)
    });
    build(&catalog, "web", "1.1", &v2, |m| {
        m["built_at"] = json!(1_796_700_000);
        // This one failed a check of its own, and was published to two regions.
        let checks = m["test"]["checks"].as_array_mut().unwrap();
        checks.push(json!({"name": "run: curl -fsS localhost", "ok": false,
            "detail": "curl: (7) Failed to connect", "seconds": 0.4}));
        let g = json!({"cloud": "kiln-alpha", "id": "0e3c9a1e-57cb-4b1e-9d6f-2f1b6f0d5c11",
            "name": "web-1.1", "disk_format": "qcow2", "status": "active",
            "visibility": "private", "size": 1, "os_hash_value": "", "method": "upload",
            "reused": false, "members": [], "rotated": []});
        let mut g2 = g.clone();
        g2["region"] = json!("RegionTwo");
        m["published"]["glance"] = json!([g, g2]);
        // The provision stage came from the stage cache.
        m["stages"][2]["reused"] = json!(true);
    });
    let hostile = "<script>document.title='owned'</script>";
    build(&catalog, hostile, "1.0", &v1, |m| {
        m["built_at"] = json!(1_796_650_000);
        m["test"] = Value::Null;
    });
    let failed = catalog.join("db-2.0.failed");
    std::fs::create_dir_all(&failed).unwrap();
    std::fs::write(
        failed.join("build.log"),
        " INFO stage provision: starting\n\u{1b}[31mERROR\u{1b}[0m nothing\n ERROR stage provision failed: step 2 (apt-get install postgresql-17) exited 100\nerror: building db-2.0: provisioning failed\n",
    )
    .unwrap();
    // A directory that is not a build, and a symlink to one elsewhere: neither is reported.
    std::fs::create_dir_all(catalog.join("scratch")).unwrap();
    let elsewhere = dir.path().join("elsewhere");
    build(&elsewhere, "outside", "9.9", &v1, |_| {});
    std::os::unix::fs::symlink(elsewhere.join("outside-9.9"), catalog.join("outside-9.9")).unwrap();

    let o = kiln().arg("report").arg(&catalog).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let page = catalog.join("report.html");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        !html.contains("<script"),
        "the hostile name reached the page as markup"
    );

    // What the browser made of it.
    let dom = text(&chromium(&["--dump-dom"], &page).stdout);
    let sections: Vec<&str> = dom.split("<section class=\"build").skip(1).collect();
    assert_eq!(sections.len(), 4, "{dom}");
    let section = |name: &str| {
        *sections
            .iter()
            .find(|s| s.contains(&format!("data-name=\"{name}\"")))
            .unwrap_or_else(|| panic!("no section for {name}: {dom}"))
    };
    assert!(section("web").contains("data-version=\"1.0\" data-result=\"passed\""));
    let web11 = sections
        .iter()
        .find(|s| s.contains("data-version=\"1.1\""))
        .unwrap();
    assert!(web11.contains("data-result=\"failed\""), "{web11}");
    assert!(web11.contains("<tr class=\"check fail\" data-state=\"fail\"><td>fail</td><td>run: curl -fsS localhost</td>"), "{web11}");
    assert_eq!(web11.matches("data-state=\"ok\"").count(), 9, "{web11}");
    assert!(
        web11.contains("Since 1.0: 1 added, 1 removed, 1 changed."),
        "{web11}"
    );
    assert!(
        web11.contains("<li class=\"added\">+ htop 3.2.2-2 (amd64)</li>"),
        "{web11}"
    );
    assert!(
        web11.contains("<li class=\"removed\">− nano 7.2-1 (amd64)</li>"),
        "{web11}"
    );
    assert!(
        web11.contains("bash (amd64) 5.2.15-2+b7 → 5.2.15-2+b8"),
        "{web11}"
    );
    assert!(web11.contains("<td>RegionTwo</td>"), "{web11}");
    assert!(web11.contains("<rect class=\"reused\""), "{web11}");
    // The hostile name is text in the DOM: the browser ran no script of it.
    let h = section("&lt;script&gt;document.title='owned'&lt;/script&gt;");
    assert!(h.contains("data-result=\"untested\""), "{h}");
    assert!(!dom.contains("<title>owned</title>"), "{dom}");
    let db = section("db-2.0.failed");
    assert!(
        db.contains("step 2 (apt-get install postgresql-17) exited 100"),
        "{db}"
    );
    assert!(
        db.contains("error: building db-2.0: provisioning failed"),
        "{db}"
    );
    assert!(
        !dom.contains("outside"),
        "a symlinked directory was followed"
    );
    assert!(
        dom.contains("<td>4</td><td>1</td><td>2</td><td>1</td><td>2</td>"),
        "summary: {dom}"
    );

    // What the browser drew: the built stages' green and the reused stage's blue, and the
    // failed check's red row.
    let shot = dir.path().join("report.png");
    chromium(
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1200,4000",
        ],
        &page,
    );
    let built = pixels_of(&shot, [0x3d, 0x8b, 0x5a]);
    let reused = pixels_of(&shot, [0x8f, 0xb3, 0xd9]);
    let failed_row = pixels_of(&shot, [0xf8, 0xd4, 0xd4]);
    assert!(built > 5_000, "built-stage bars: {built} pixels");
    assert!(reused > 300, "reused-stage bar: {reused} pixels");
    assert!(failed_row > 5_000, "failed check row: {failed_row} pixels");

    // Run again: the page it wrote is replaced; a file it did not write is not.
    let again = kiln().arg("report").arg(&catalog).output().unwrap();
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    let mine = dir.path().join("mine.html");
    std::fs::write(&mine, "my notes\n").unwrap();
    let refused = kiln()
        .arg("report")
        .arg(&catalog)
        .arg("-o")
        .arg(&mine)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stderr));
    assert!(text(&refused.stderr).contains("is not a page kiln report wrote"));
    assert_eq!(std::fs::read_to_string(&mine).unwrap(), "my notes\n");
}
