import pytest

from tidian import ConfigError, Registry, UnknownNameError
from tidian.registry import check_options


def test_register_get_and_list_with_patterns():
    reg: Registry = Registry("widget", listing="tidian widgets")

    @reg.register("alpha", size=1)
    def alpha(*, scale: int = 2):
        """Alpha widget.

        More text."""

    reg.add("beta", object(), description="b")
    assert reg.get("alpha") is alpha
    assert reg.entry("alpha").description == "Alpha widget."
    assert reg.entry("alpha").meta == {"size": 1}
    assert reg.entry("alpha").options() == {"scale": 2}
    assert reg.names() == ["alpha", "beta"]
    assert reg.names("a*") == ["alpha"]
    assert "beta" in reg and len(reg) == 2


def test_unknown_name_suggests_close_matches_and_listing_command():
    reg: Registry = Registry("model", listing="tidian models")
    for name in ("cnn1d", "cnn2d", "mlp"):
        reg.add(name, object())
    with pytest.raises(UnknownNameError) as err:
        reg.get("cnn")
    message = str(err.value)
    assert "unknown model 'cnn'" in message
    assert "cnn1d" in message and "cnn2d" in message
    assert "`tidian models`" in message
    assert isinstance(err.value, KeyError | ValueError)


def test_duplicate_registration_is_refused():
    reg: Registry = Registry("thing")
    reg.add("a", 1)
    with pytest.raises(ConfigError, match="already registered"):
        reg.add("a", 2)


def test_check_options_names_the_accepted_ones():
    def build(task, *, width=1, depth=2):
        return task

    check_options("model 'x'", build, {"width": 3})
    with pytest.raises(ConfigError) as err:
        check_options("model 'x'", build, {"widht": 3})
    assert "'widht' (did you mean 'width'?)" in str(err.value)
    assert "depth, width" in str(err.value)
    assert "task" not in str(err.value).split("It takes:")[1]


def test_optional_dependency_error_names_the_extra():
    from tidian import DependencyError
    from tidian.exceptions import require

    assert require("json", "dev", "reading JSON").dumps([1]) == "[1]"
    with pytest.raises(DependencyError, match=r"pip install 'tidian\[onnx\]'"):
        require("tidian_missing_module", "onnx", "ONNX export")
