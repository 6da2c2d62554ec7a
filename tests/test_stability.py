"""``convbench stability``: the study's ablations again under other training seeds, each seed set
into its own directory, and one table of verdicts per seed set."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from convbench import stability

TINY = {
    "study": "tiny_stability",
    "dataset": "digits",
    "folds": 2,
    "repeats": 2,
    "seed": 0,
    "seeds": [0],
    "threads": 1,
    "results_dir": "results",
    "reports_dir": "reports",
    "recipe": {"lr": 0.1, "batch_size": 64, "epochs": 1, "warmup_epochs": 0},
    "experiments": {
        "mlp": {"arch": "mlp", "input_size": 8, "recipe": {"weight_decay": 0.0}},
        "mlp_dropout": {"arch": "mlp", "input_size": 8, "knobs": {"dropout": 0.5}, "recipe": {"weight_decay": 0.0}},
        "mlp_wide": {"arch": "mlp", "input_size": 8, "knobs": {"width": 2.0}},
        "mlp_narrow": {"arch": "mlp", "input_size": 8, "knobs": {"width": 0.5}},
        "lenet": {"arch": "lenet", "input_size": 12},  # in no ablation: never run by the check
    },
    "ablations": {"dropout": {"baseline": "mlp", "treatment": "mlp_dropout"},
                  "width": {"baseline": "mlp_narrow", "treatment": "mlp_wide"}},
}


def document(difference: float, p_holm: float | None, verdict: str) -> dict[str, Any]:
    return {"folds": 5, "repeats": 1, "ablations": {"pair": {"baseline": "a", "treatment": "b", "repeats": 3,
            "val_acc": {"difference": difference, "ci_low": difference - 1, "ci_high": difference + 1,
                        "p_holm": p_holm, "verdict": verdict}}}}


def test_the_table_has_a_column_per_seed_set_and_says_when_a_verdict_flips() -> None:
    rows = stability.verdict_rows({0: document(2.5, 0.0004, "better"), 1: document(1.2, 0.21, "no clear difference")})
    assert [(r["seed_set"], r["repeats"], r["verdict"]) for r in rows] == [(0, 3, "better"), (1, 3, "no clear difference")]
    table = stability.format_table(rows).splitlines()
    assert table[0] == "| ablation | seed set 0 | seed set 1 | same verdict |"
    assert table[2] == ("| pair | +2.50, Holm p < 0.001, better | +1.20, Holm p 0.210, no clear difference "
                        "| **no** |")
    same = stability.format_table(stability.verdict_rows({0: document(2.5, 0.01, "better"),
                                                          3: document(2.1, 0.02, "better")}))
    assert same.splitlines()[2].endswith("| yes |") and "seed set 3" in same


def test_a_seed_sets_study_keeps_only_the_ablations_experiments_in_its_own_directory() -> None:
    config = stability.seed_set_config(TINY, 7, Path("results/_stability"))
    assert config["seeds"] == [7] and config["study"] == "tiny_stability-seeds7"
    assert "seeds" not in config["experiments"]["mlp"]
    assert set(config["experiments"]) == {"mlp", "mlp_dropout", "mlp_wide", "mlp_narrow"}
    assert config["results_dir"] == config["reports_dir"] == "results/_stability/seeds7"
    assert config["repeats"] == 2 and TINY["seeds"] == [0]  # the study itself unchanged


def test_a_seed_set_replaces_every_list_of_n_seeds_by_its_own_n() -> None:
    """Seed set s of n seeds is s*n ... s*n+n-1: an experiment's own three seeds and the study's
    one never meet another seed set's, and seed set 0 is the study itself."""
    own = {**TINY, "seeds": [0], "experiments": {
        name: ({**raw, "seeds": [0, 1, 2]} if name in ("mlp", "mlp_dropout") else raw)
        for name, raw in TINY["experiments"].items()}}
    sets = [stability.seed_set_config(own, number, Path("out")) for number in (0, 1, 2)]
    assert [c["experiments"]["mlp_dropout"]["seeds"] for c in sets] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert [c["seeds"] for c in sets] == [[0], [1], [2]]
    assert "seeds" not in sets[1]["experiments"]["mlp_wide"]  # it trains the study's seed set


@pytest.mark.slow
def test_stability_runs_each_seed_set_apart_and_prints_its_verdicts(
    tmp_path: Path, digits_npz: Path, convbench: Callable[[list[str]], int],
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(TINY, sort_keys=False))
    (tmp_path / "data/prepared").mkdir(parents=True)
    shutil.copy(digits_npz, tmp_path / "data/prepared/digits.npz")
    monkeypatch.chdir(tmp_path)
    assert convbench(["stability", "--study", "params.yaml", "--seed-sets", "0", "1", "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    assert "| ablation | seed set 0 | seed set 1 | same verdict |" in out
    rows = json.loads((tmp_path / "results/_stability/verdicts.json").read_text())
    for seed in (0, 1):
        ablations = json.loads((tmp_path / f"results/_stability/seeds{seed}/ablations.json").read_text())
        numbers = ablations["ablations"]["dropout"]["val_acc"]
        row = next(r for r in rows if r["seed_set"] == seed)
        assert (row["difference"], row["p_holm"], row["verdict"]) == (
            numbers["difference"], numbers["p_holm"], numbers["verdict"])
        assert f"{numbers['difference']:+.2f}, Holm p" in out
        # every run of the seed set was trained with its seed, 2 repeats x 2 folds
        runs = sorted((tmp_path / f"results/_stability/seeds{seed}/mlp_dropout").glob("*/metrics.json"))
        assert [json.loads(p.read_text())["seed"] for p in runs] == [seed] * 4
        assert not (tmp_path / f"results/_stability/seeds{seed}/lenet").exists()
    # the two seed sets trained different models; the study's own results were never written
    weights = [(tmp_path / f"results/_stability/seeds{s}/mlp/r0-fold0-seed{s}/model.pt").read_bytes() for s in (0, 1)]
    assert weights[0] != weights[1]
    assert not (tmp_path / "results/mlp").exists() and not (tmp_path / "results/study.json").exists()
    assert (tmp_path / "data/splits/digits-k2-s0/repeat1.json").exists()  # the study's splits, made once


def test_the_seed_sets_directory_is_outside_what_dvc_hashes() -> None:
    """The check writes under the study's results directory, which DVC's report stage depends on:
    .dvcignore keeps its seed sets (the default directory and the README's AVX2 one) out of that
    hash, as it keeps the timings out, so `dvc status` stays clean after a stability check."""
    import pathspec

    from convbench.study import load_study

    root = Path(__file__).resolve().parents[1]
    ignored = pathspec.GitIgnoreSpec.from_lines((root / ".dvcignore").read_text().splitlines())
    results = load_study(root / "params.yaml").results_dir
    for out_dir in (f"{results}/_stability", f"{results}/_stability-avx2"):
        assert ignored.match_file(f"{out_dir}/seeds1/lenet/r0-fold0-seed3/model.pt"), out_dir
    assert not ignored.match_file(f"{results}/lenet/r0-fold0-seed0/model.pt")
