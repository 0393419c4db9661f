"""The config system: YAML + dotted overrides fill dataclasses; bad keys and types name the key."""

import dataclasses
from typing import Literal, Optional

import pytest

from spiritlm_jax.config import ConfigError, from_dict, load_config, parse_overrides, save_config, to_dict


@dataclasses.dataclass(frozen=True)
class Inner:
    lr: float = 1e-3
    steps: int = 10
    schedule: Literal["constant", "cosine"] = "constant"


@dataclasses.dataclass(frozen=True)
class Outer:
    name: str = "x"
    inner: Inner = Inner()
    sizes: tuple[int, ...] = (1, 2)
    maybe: Optional[int] = None
    flag: bool = False
    pair: tuple[int, float] = (1, 2.0)


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: run\ninner:\n  lr: 3e-5\n  steps: 5\nsizes: [4, 8]\n")
    cfg = load_config(Outer, path, ["inner.steps=7", "maybe=3", "flag=true", "inner.schedule=cosine", "pair=[5, 6]"])
    assert cfg == Outer("run", Inner(3e-5, 7, "cosine"), (4, 8), 3, True, (5, 6.0))
    assert isinstance(cfg.pair[1], float)


@dataclasses.dataclass(frozen=True)
class WithCustomDefault:
    inner: Inner = Inner(lr=0.5, steps=99)


def test_partial_section_updates_the_field_default():
    cfg = load_config(WithCustomDefault, None, ["inner.steps=3"])
    assert cfg.inner == Inner(lr=0.5, steps=3)  # lr keeps the field's default, not Inner's


def test_round_trip(tmp_path):
    cfg = Outer(inner=Inner(lr=0.5), sizes=(3,))
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(Outer, tmp_path / "c.yaml") == cfg
    assert from_dict(Outer, to_dict(cfg)) == cfg


@pytest.mark.parametrize(
    "override, message",
    [
        ("inner.stpes=3", "unknown config key inner.stpes"),
        ("inner.steps=three", "inner.steps: expected an integer"),
        ("inner.schedule=linear", "inner.schedule: 'linear' is not one of"),
        ("flag=3", "flag: expected true/false"),
        ("sizes=5", "sizes: expected a list"),
        ("inner=4", "inner: expected a mapping"),
        ("pair=[1]", "pair: expected 2 items"),
        ("pair=[1, x]", r"pair\[1\]: expected a number"),
        ("nokey", "not of the form key=value"),
    ],
)
def test_errors_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(Outer, None, [override])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Outer, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(Outer, bad)


def test_parse_overrides_nesting():
    assert parse_overrides(["a.b.c=1", "a.d=[1, 2]", "e=null"]) == {"a": {"b": {"c": 1}, "d": [1, 2]}, "e": None}


# --- the one command-line loader (config.parse_cli), used by every CLI ---------------------------


@dataclasses.dataclass(frozen=True)
class _Cli:
    prompt: Optional[str] = None  # a prompt, taken verbatim
    name: str = "x"
    n: int = 1  # how many
    items: tuple[str, ...] = ()
    nums: tuple[int, ...] = ()
    flag: bool = False
    lr: float = dataclasses.field(default=0.1, metadata={"help": "learning rate"})


def test_parse_cli_flag_styles_and_verbatim_strings():
    from spiritlm_jax.config import parse_cli

    cfg = parse_cli(
        _Cli,
        [
            "--prompt",
            "[Text]hi[Speech][Hu3]",
            "name=a: b",
            "--n",
            "3",
            "--items",
            "007",
            "--items",
            "[x",
            "--nums",
            "4",
            "--flag",
            "--lr=1e-3",
        ],
        "prog",
    )
    assert cfg == _Cli(
        prompt="[Text]hi[Speech][Hu3]", name="a: b", n=3, items=("007", "[x"), nums=(4,), flag=True, lr=1e-3
    )
    assert parse_cli(_Cli, ["prompt=null", "--no-flag", "items=[a,b]"], "prog") == _Cli(items=("a", "b"))


def test_parse_cli_errors_name_the_key_and_help_lists_every_key():
    from spiritlm_jax.config import HelpRequested, parse_cli

    with pytest.raises(ConfigError, match="--bogus"):
        parse_cli(_Cli, ["--bogus", "1"], "prog")
    with pytest.raises(ConfigError, match="n: expected an integer"):
        parse_cli(_Cli, ["--n", "many"], "prog")
    with pytest.raises(ConfigError, match="unexpected argument 'stray'"):
        parse_cli(_Cli, ["stray"], "prog")
    with pytest.raises(HelpRequested) as e:
        parse_cli(_Cli, ["--help"], "prog")
    text = str(e.value)
    for key in ("prompt", "name", "n", "items", "nums", "flag", "lr"):
        assert f"  {key} " in text
    assert "how many" in text and "learning rate" in text and "Optional[str] = null" in text
