"""The evaluation CLI: likelihood over StoryCloze sources, stsp with local Hugging Face classifier
folders, and suites from YAML (argv building, a failing run reported without stopping the rest, the
summary files). Checkpoint loading is stubbed to the tiny random SpiritLM of test_stsp (loading real
run directories is covered by test_evaluate.py and test_generation.py)."""

import json

import pytest
import yaml

from spiritlm_jax.evaluate import main, suite_runs
from spiritlm_jax.inference.spiritlm import SpiritLM
from tests.test_storycloze import WAVS, spoken, write_csv
from tests.test_stsp import make_audio_classifier, make_text_classifier, tiny_lm, write_release


@pytest.fixture
def stub_checkpoint(monkeypatch):
    loaded = []

    def fake(cls, path, **kw):
        loaded.append((str(path), kw))
        return tiny_lm()

    monkeypatch.setattr(SpiritLM, "from_checkpoint", classmethod(fake))
    return loaded


@pytest.fixture(scope="module")
def clf_dirs(tmp_path_factory):
    d = tmp_path_factory.mktemp("clf")
    return make_text_classifier(d / "text"), make_audio_classifier(d / "audio")


def test_likelihood_storycloze_sources(tmp_path, stub_checkpoint, capsys):
    csv_path = write_csv(tmp_path / "cloze_test.csv")
    out = tmp_path / "tsc"
    assert (
        main(
            [
                "likelihood",
                "--checkpoint",
                "ckpt",
                "--storycloze-csv",
                str(csv_path),
                "--topic",
                "--setting",
                "T",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads((out / "report.json").read_text())
    assert report["task"] == "likelihood" and report["title"] == "Topic-cloze_test"
    assert report["settings"]["T"]["n"] == 3 and report["summary"] == {
        "T": report["settings"]["T"]["accuracy_normalized"]
    }
    assert "| T | 3 | 0 |" in (out / "report.md").read_text() and (out / "report.png").is_file()
    assert "3 items from Topic-cloze_test" in capsys.readouterr().out

    whole = spoken(tmp_path / "sSC", {0: {"correct": (WAVS[0], "a"), "incorrect": (WAVS[1], "b")}})
    assert (
        main(
            [
                "likelihood",
                "--checkpoint",
                "ckpt",
                "--storycloze-dir",
                str(whole),
                "--setting",
                "T2S",
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
    assert "items have no context" in capsys.readouterr().err
    assert (
        main(
            [
                "likelihood",
                "--checkpoint",
                "ckpt",
                "--items",
                str(csv_path),
                "--topic",
                "--setting",
                "T",
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
    assert "--topic builds Topic-StoryCloze" in capsys.readouterr().err
    assert (
        main(
            [
                "likelihood",
                "--checkpoint",
                "ckpt",
                "--storycloze-csv",
                str(csv_path),
                "--setting",
                "Q",
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
    assert "invalid choice: 'Q'" in capsys.readouterr().err


def stsp_argv(man, clf_dirs, out, *extra):
    text, audio = clf_dirs
    return [
        "stsp",
        "--checkpoint",
        "ckpt",
        "--manifest",
        str(man),
        "--text-classifier",
        str(text),
        "--audio-classifier",
        str(audio),
        "--direction",
        "T2T",
        "--direction",
        "S2S",
        "--batch-size",
        "4",
        "--text-new-tokens",
        "40",
        "--speech-new-tokens",
        "40",
        "--classifier-device",
        "cpu",
        "--out",
        str(out),
        *extra,
    ]


def test_stsp_command(tmp_path, stub_checkpoint, clf_dirs, capsys):
    man = write_release(tmp_path / "stsp")
    out = tmp_path / "out"
    assert main(stsp_argv(man, clf_dirs, out, "--vocoder", "voc")) == 0
    assert stub_checkpoint[-1] == ("ckpt", {"vocoder": "voc"})
    report = json.loads((out / "report.json").read_text())
    assert set(report["rows"]) == {"T2T", "S2S", "average", "prompts (text)", "prompts (speech)"}
    assert report["rows"]["T2T"]["bad"] == 1 and report["rows"]["S2S"]["bad"] == 1
    assert set(report["summary"]) == {"T2T", "S2S", "average", "prompts_text", "prompts_speech"}
    printed = capsys.readouterr().out
    assert "T2T (0-shot): 4/4 generated and classified" in printed and "summary: T2T" in printed
    md = (out / "report.md").read_text()
    assert md.startswith("# STSP 0-shot (emov.test.jsonl)") and "| average |" in md
    assert (out / "report.png").is_file()

    assert main(stsp_argv(man, clf_dirs, tmp_path / "o2", "--shots", "4")) == 2
    assert "multiple of 3" in capsys.readouterr().err
    assert (
        main(["stsp", "--checkpoint", "c", "--manifest", str(man), "--direction", "T2S", "--out", str(tmp_path)]) == 2
    )
    assert "give an audio classifier" in capsys.readouterr().err


def test_suite_argv_building():
    runs = suite_runs(
        {
            "defaults": {"checkpoint": "runs/demo", "batch_size": 8},
            "runs": [
                {
                    "task": "likelihood",
                    "name": "sc",
                    "args": {"items": "a.jsonl", "setting": ["T", "S"], "out": "o", "batch_size": 4},
                },
                {"task": "stsp", "args": {"manifest": "m.jsonl", "save_audio": True, "vocoder": None, "out": "p"}},
            ],
        }
    )
    assert runs[0]["argv"] == [
        "likelihood",
        "--checkpoint",
        "runs/demo",
        "--batch-size",
        "4",
        "--items",
        "a.jsonl",
        "--setting",
        "T",
        "--setting",
        "S",
        "--out",
        "o",
    ]
    assert runs[1]["name"] == "2-stsp" and "--save-audio" in runs[1]["argv"] and "--vocoder" not in runs[1]["argv"]
    for spec, msg in [
        ({"runs": []}, "non-empty list"),
        ([{"args": {}}], "run 1: expected a mapping with 'task'"),
        ([{"task": "suite"}], "cannot run another suite"),
        ({"run": []}, "unknown top-level key"),
        ([{"task": "stsp", "args": {"x": {"a": 1}}}], "is a mapping"),
        ([{"task": "stsp", "arg": {}}], r"unknown key\(s\) \['arg'\]"),
    ]:
        with pytest.raises(ValueError, match=msg):
            suite_runs(spec)


def test_suite_runs_on_after_a_failing_run(tmp_path, stub_checkpoint, clf_dirs, capsys):
    csv_path = write_csv(tmp_path / "cloze.csv")
    man = write_release(tmp_path / "stsp")
    text, audio = clf_dirs
    spec = {
        "defaults": {"checkpoint": "ckpt"},
        "runs": [
            {
                "task": "likelihood",
                "name": "missing-data",
                "args": {"storycloze_csv": str(tmp_path / "nope.csv"), "setting": ["T"], "out": str(tmp_path / "a")},
            },
            {"task": "likelihood", "name": "bad-args", "args": {"items": "x", "setting": "T", "out": "o", "bogus": 1}},
            {
                "task": "likelihood",
                "name": "sc",
                "args": {"storycloze_csv": str(csv_path), "setting": ["T"], "out": str(tmp_path / "sc")},
            },
            {
                "task": "stsp",
                "name": "stsp",
                "args": {
                    "manifest": str(man),
                    "text_classifier": str(text),
                    "audio_classifier": str(audio),
                    "direction": ["T2T"],
                    "batch_size": 4,
                    "text_new_tokens": 40,
                    "classifier_device": "cpu",
                    "out": str(tmp_path / "stsp_out"),
                },
            },
        ],
    }
    cfg = tmp_path / "suite.yaml"
    cfg.write_text(yaml.safe_dump(spec))
    assert main(["suite", str(cfg), "--out", str(tmp_path / "suite")]) == 1  # one run failed
    res = json.loads((tmp_path / "suite" / "suite.json").read_text())
    status = {r["name"]: (r["status"], r["rc"]) for r in res["runs"]}
    assert status == {"missing-data": ("failed", 2), "bad-args": ("failed", 2), "sc": ("ok", 0), "stsp": ("ok", 0)}
    assert res["failed"] == 2 and "nope.csv does not exist" in res["runs"][0]["error"]
    assert "unknown config key bogus" in res["runs"][1]["error"]
    sc = json.loads((tmp_path / "sc" / "report.json").read_text())
    assert res["runs"][2]["summary"] == sc["summary"] and "T2T" in res["runs"][3]["summary"]
    md = (tmp_path / "suite" / "suite.md").read_text()
    assert "| missing-data | likelihood | failed |" in md and "| stsp | stsp | ok |" in md
    err = capsys.readouterr().err
    assert "[suite 1/4] missing-data failed" in err
    missing = tmp_path / "none.yaml"
    assert main(["suite", str(missing), "--out", str(tmp_path / "s2")]) == 2


def test_report_without_matplotlib_and_torn_cache(tmp_path, monkeypatch, capsys):
    import sys

    from spiritlm_jax.evaluation.report import JsonlCache, write_report

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the `eval` extra were not installed
    write_report(tmp_path, "t", "T", {"S": {"n": 2, "bad": 0, "accuracy": 0.5}}, summary={"S": 0.5})
    assert not (tmp_path / "report.png").exists() and "no report.png" in capsys.readouterr().err
    assert json.loads((tmp_path / "report.json").read_text())["summary"] == {"S": 0.5}
    cache = tmp_path / "c.jsonl"
    cache.write_text('{"id": "a", "x": 1}\n{"id": "b", "x"')  # killed mid-write
    c = JsonlCache(cache)
    assert "a" in c and "b" not in c
    c.add({"id": "b", "x": 2})
    assert [json.loads(line)["id"] for line in cache.read_text().splitlines()] == ["a", "b"]


def test_every_command_help_lists_its_keys(capsys):
    for task, keys in {
        "likelihood": ("checkpoint", "setting", "storycloze_csv", "chunk"),
        "stsp": ("manifest", "direction", "text_label_map", "speaker"),
        "fewshot": ("task", "shots_from", "transcriber"),
        "suite": ("suite", "out"),
    }.items():
        assert main([task, "--help"]) == 0
        out = capsys.readouterr().out
        assert all(k in out for k in keys), (task, out)
    assert main([]) == 2 and main(["nope"]) == 2


def test_a_second_evaluation_into_the_same_out_is_refused(tmp_path, stub_checkpoint, capsys):
    from spiritlm_jax.locking import lock_dir

    csv_path = write_csv(tmp_path / "cloze_test.csv")
    out = tmp_path / "tsc"
    argv = ["likelihood", "--checkpoint", "ckpt", "--storycloze-csv", str(csv_path), "--setting", "T"]
    argv += ["--out", str(out)]
    with lock_dir(out, "evaluation output"):  # a live first job
        assert main(argv) == 2
        assert f"evaluation output {out} is in use by pid" in capsys.readouterr().err
        assert not (out / "report.json").exists()
    assert main(argv) == 0  # once it is gone, the same command runs
