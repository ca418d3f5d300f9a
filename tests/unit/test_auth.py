import pytest

from flashlive.auth import ApiKeys
from flashlive.errors import PermissionDenied, Unauthenticated


def test_no_keys_means_open() -> None:
    ApiKeys(frozenset()).check(None)


def test_missing_and_wrong_keys_are_refused_differently() -> None:
    keys = ApiKeys(frozenset({"k1", "k2"}))
    keys.check("k2")
    with pytest.raises(Unauthenticated):
        keys.check(None)
    with pytest.raises(PermissionDenied):
        keys.check("k3")
