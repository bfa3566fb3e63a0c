//! `ernie caption` / `ernie inspect` with the checkpoint's own chat template (issue #12): greedy
//! ids equal transformers' for the fixture template and a converter-style one without the think
//! block (`tests/fixtures/vl-template/greedy.json`, `make_vl_template_reference.py`).

use crate::common::*;

fn greedy() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("vl-template/greedy.json")).unwrap()).unwrap()
}

fn template(name: &str) -> String {
    let g: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture("vl-template/goldens.json")).unwrap()).unwrap();
    g["templates"][name].as_str().unwrap().to_string()
}

/// `vl-moe-f32` with `chat_template.jinja` replaced by `text`.
fn with_template(text: &str) -> tempfile::TempDir {
    let dir = copy_fixture("vl-moe-f32");
    std::fs::write(dir.path().join("chat_template.jinja"), text).unwrap();
    dir
}

fn caption(dir: &std::path::Path, prompt: &str, extra: &[&str]) -> std::process::Output {
    ernie()
        .args(["caption", "--model"])
        .arg(dir)
        .arg("--image")
        .arg(fixture("vl-template/image.png"))
        .args(["--prompt", prompt, "--max-tokens", "8", "--temperature", "0", "--format", "json"])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn caption_json_equals_transformers_greedy_ids_for_both_templates() {
    let g = greedy();
    let runs = g["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    for run in runs {
        let name = run["template"].as_str().unwrap();
        let dir = with_template(&template(name));
        let out = caption(dir.path(), run["prompt"].as_str().unwrap(), &[]);
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(u32s(&v["token_ids"]), u32s(&run["greedy_ids"]), "{name}");
    }
    // The two templates give different prompts, hence different captions: the test can fail.
    assert_ne!(runs[0]["greedy_ids"], runs[1]["greedy_ids"]);
}

#[test]
fn caption_json_equals_transformers_greedy_ids_on_a_corpus_image() {
    let g = greedy();
    let runs = g["corpus_runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    for run in runs {
        let name = run["template"].as_str().unwrap();
        let dir = with_template(&template(name));
        let out = ernie()
            .args(["caption", "--model"])
            .arg(dir.path())
            .arg("--image")
            .arg(repo_root().join(run["image"].as_str().unwrap()))
            .args(["--prompt", run["prompt"].as_str().unwrap(), "--max-tokens", "8", "--temperature", "0", "--format", "json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(u32s(&v["token_ids"]), u32s(&run["greedy_ids"]), "{name} on {}", run["image"]);
    }
    assert_ne!(runs[0]["greedy_ids"], runs[1]["greedy_ids"]);
}

#[test]
fn enable_thinking_reaches_the_template() {
    let dir = with_template(&template("fixture"));
    let prompt = greedy()["runs"][0]["prompt"].as_str().unwrap().to_string();
    let plain = caption(dir.path(), &prompt, &[]);
    let think = caption(dir.path(), &prompt, &["--enable-thinking"]);
    assert!(plain.status.success() && think.status.success(), "{}", String::from_utf8_lossy(&think.stderr));
    let ids = |o: &std::process::Output| u32s(&serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["token_ids"]);
    // `<think>` open instead of the empty think block: a different prompt, a different caption.
    assert_ne!(ids(&plain), ids(&think));
    assert_eq!(ids(&plain), u32s(&greedy()["runs"][0]["greedy_ids"]));
}

#[test]
fn a_template_with_an_unknown_variable_is_one_clear_error_line() {
    let bad = template("converter").replace("{{- '\\nAssistant: ' -}}", "{{- '\\nAssistant: ' ~ no_such_variable -}}");
    assert_ne!(bad, template("converter"));
    let dir = with_template(&bad);
    let out = caption(dir.path(), "Describe.", &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].starts_with("error: ") && lines[0].contains("no_such_variable"), "{stderr}");
}

#[test]
fn inspect_names_the_template_source() {
    let dir = with_template(&template("converter"));
    let run = |d: &std::path::Path| {
        let out = ernie().args(["inspect", "--model"]).arg(d).args(["--prompt", "hi"]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let text = run(dir.path());
    assert!(text.lines().next().unwrap().starts_with("template: ") && text.contains("chat_template.jinja"), "{text}");
    std::fs::remove_file(dir.path().join("chat_template.jinja")).unwrap();
    let text = run(dir.path());
    assert!(text.contains("built-in ERNIE-4.5-VL format"), "{text}");
}
