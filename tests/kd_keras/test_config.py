from typing import Literal

import pytest
from pydantic import Field

from kd_keras import config as config_lib


class Inner(config_lib.ConfigModel):
    rate: float = Field(0.5, gt=0)
    mode: Literal["a", "b"] = "a"


class Outer(config_lib.ConfigModel):
    epochs: int = Field(3, ge=1)
    name: str | None = None
    classes: tuple[int, ...] | None = None
    inner: Inner = Inner()


def test_defaults_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 5\ninner:\n  mode: b\n")
    data = config_lib.apply_overrides(
        config_lib.load_yaml(path), ["inner.rate=0.25", "classes=[1, 2]"]
    )
    config = config_lib.from_dict(Outer, data)
    assert config == Outer(epochs=5, classes=(1, 2), inner=Inner(rate=0.25, mode="b"))
    assert config_lib.from_dict(Outer, config_lib.to_dict(config)) == config
    assert config_lib.flatten(config_lib.to_dict(config))["inner.mode"] == "b"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"epoch": 3}, "Unknown config key 'epoch'. Allowed keys: classes, epochs, inner, name"),
        ({"inner": {"mod": "a"}}, "Unknown config key 'inner.mod'. Allowed keys under inner"),
        ({"inner": {"mode": "c"}}, "Allowed values: 'a', 'b'. Received: inner.mode='c'"),
        ({"epochs": "many"}, "Expected an integer for epochs"),
        ({"inner": {"rate": "fast"}}, "Expected a number for inner.rate"),
        ({"inner": {"rate": 0}}, "Expected inner.rate > 0. Received: inner.rate=0"),
        ({"epochs": 0}, "Expected epochs >= 1. Received: epochs=0"),
        ({"inner": {"rate": "inf"}}, "Expected a finite number for inner.rate"),
    ],
)
def test_bad_keys_and_values_name_the_key(data, message):
    with pytest.raises(
        config_lib.ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")
    ):
        config_lib.from_dict(Outer, data)


def test_yaml_is_loaded_safely(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("epochs: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(config_lib.ConfigError, match="not valid YAML"):
        config_lib.load_yaml(path)


def test_missing_file_and_bad_override(tmp_path):
    with pytest.raises(config_lib.ConfigError, match="Config file not found"):
        config_lib.load_yaml(tmp_path / "nope.yaml")
    with pytest.raises(config_lib.ConfigError, match="Expected an override like"):
        config_lib.apply_overrides({}, ["epochs"])


def test_comma_separated_lists_and_frozen_models():
    config = config_lib.from_dict(Outer, {"classes": "0, 3,7"})
    assert config.classes == (0, 3, 7)
    with pytest.raises(Exception, match="frozen"):
        config.epochs = 4


class Recipe(config_lib.ConfigModel):
    teacher: Inner = Inner(rate=2.0, mode="b")


def test_a_partial_section_keeps_the_recipe_defaults_of_its_other_keys():
    config = config_lib.from_dict(Recipe, {"teacher": {"rate": 3.0}})
    assert config.teacher == Inner(rate=3.0, mode="b")  # not Inner's own mode="a"
