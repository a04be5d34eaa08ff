"""The private TensorFlow and TF-MOT symbols kd_keras.compat imports still exist (an upgrade that
moves one fails here, naming it)."""

import pytest

from kd_keras import compat


@pytest.mark.parametrize(
    ("module", "attribute"), compat.USED, ids=[name for _, name in compat.USED]
)
def test_each_private_symbol_is_still_there(module, attribute):
    assert hasattr(module, attribute), f"{module.__name__} no longer has {attribute}"


def test_the_coordination_service_hook_still_takes_its_settings():
    hook = compat.eager_context.context().configure_coordination_service
    names = hook.__code__.co_varnames[: hook.__code__.co_argcount]
    assert "service_type" in names and "service_leader" in names
