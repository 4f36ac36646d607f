use super::*;

fn job(recipe: &str) -> Job {
    Job {
        recipe: recipe.into(),
        slug: "debian-12-1.0".into(),
        arch: "x86_64".into(),
        vcpus: 2,
        memory_mib: 2048,
        clouds: vec!["kiln-alpha".into()],
    }
}

fn settings() -> Settings {
    Settings {
        image: "registry.example.com/kiln:0.1".into(),
        cache_remote: Some("s3://kiln-cache/ci".into()),
        labels: vec![],
        repo: Some("https://git.example.com/images.git".into()),
        workers: vec![],
        parallel: 2,
    }
}

#[test]
fn values_that_could_become_expressions_or_shell_are_refused_all_at_once() {
    for bad in [
        "${{ github.token }}.yaml",
        "$(id).yaml",
        "a b.yaml",
        "../outside.yaml",
        "/etc/recipe.yaml",
        "-rf.yaml",
        "x//y.yaml",
        "",
    ] {
        assert!(check_recipe_path(bad).is_err(), "{bad:?} taken");
    }
    for good in ["examples/debian-12.yaml", "recipes/web_1.2.yaml"] {
        assert!(check_recipe_path(good).is_ok(), "{good:?} refused");
    }
    let mut s = settings();
    s.image = "kiln:latest --privileged".into();
    s.cache_remote = Some("s3://bucket/$HOME".into());
    s.labels = vec!["kvm".into(), "${{ x }}".into()];
    s.workers = vec!["w 1".into()];
    s.repo = Some("--upload-pack=touch /tmp/x".into());
    let errs = check(&[job("ok.yaml"), job("$(id).yaml")], &s);
    let whats: Vec<&str> = errs.iter().map(|e| e.what).collect();
    assert_eq!(
        whats,
        [
            "recipe",
            "--image",
            "--cache-remote",
            "--label",
            "--worker",
            "--repo"
        ]
    );
}

#[test]
fn the_emitted_yaml_reads_back_as_the_tree_it_came_from() {
    use saphyr::LoadableYamlNode as _;
    // Strings YAML would take for something else, and a multi-line script.
    let v = serde_json::json!({
        "on": {"push": null},
        "words": ["on", "yes", "no", "null", "1.0", "0x10", "~", "- a", "#x", "a: b", "'q'", "${{ matrix.recipe }}"],
        "script": "set -eu\nkiln build \"$KILN_RECIPE\"\n",
        "n": 3,
        "t": true,
    });
    let text = yaml(&v);
    let docs = saphyr::Yaml::load_from_str(&text).unwrap();
    let back = &docs[0];
    let words: Vec<&str> = back["words"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|w| {
            w.as_str()
                .unwrap_or_else(|| panic!("{w:?} is not a string in:\n{text}"))
        })
        .collect();
    assert_eq!(
        words,
        v["words"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_str().unwrap())
            .collect::<Vec<_>>()
    );
    assert_eq!(
        back["script"].as_str(),
        Some("set -eu\nkiln build \"$KILN_RECIPE\"\n")
    );
    assert_eq!(back["n"].as_integer(), Some(3));
    assert_eq!(back["t"].as_bool(), Some(true));
    assert!(back["on"]["push"].is_null());
}

#[test]
fn each_engine_names_the_recipes_and_no_secret() {
    let jobs = [
        job("examples/debian-12.yaml"),
        job("examples/debian-12-uefi.yaml"),
    ];
    for e in [
        Engine::Github,
        Engine::Gitlab,
        Engine::Buildbot,
        Engine::Kubernetes,
    ] {
        let t = render(e, &jobs, &settings());
        assert!(t.starts_with(MARK), "{e:?}");
        assert!(t.contains("examples/debian-12-uefi.yaml"), "{e:?}");
        assert!(!t.contains("password"), "{e:?}: {t}");
    }
}
