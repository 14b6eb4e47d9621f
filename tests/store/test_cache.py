"""The key a cached result is kept under (store.cache.result_key): every input it names changes it,
nothing else does, and it is the same in every process."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from store import cache
from store.cache import library_version, result_key
from store.settings import PatchSettings, ProbeSettings

ROOT = Path(__file__).resolve().parents[2]


def _key(**changes) -> str:
    args = {"kind": "probe", "version": 1, "settings": ProbeSettings(), "store_fingerprint": "8e083df1ade938a5"}
    args |= changes
    extra = {k: args.pop(k) for k in list(args) if k not in ("kind", "version", "settings", "store_fingerprint")}
    return result_key(args["kind"], args["version"], args["settings"], args["store_fingerprint"], **extra)


def test_every_input_of_a_key_changes_it_and_the_same_inputs_give_the_same_key():
    base = _key(model="mix")
    assert base == _key(model="mix") and len(base) == 20 and int(base, 16) >= 0
    others = [
        _key(model="stage"),
        _key(model="mix", kind="patch"),
        _key(model="mix", version=2),
        _key(model="mix", settings=ProbeSettings(l2=0.5)),
        _key(model="mix", settings=ProbeSettings(layers=(1,))),
        _key(model="mix", store_fingerprint="0000000000000000"),
        _key(model="mix", store_fingerprint=None),
        _key(model="mix", libraries=("numpy",)),
        _key(model="mix", something="else"),
    ]
    assert len({base, *others}) == len(others) + 1


def test_settings_of_two_kinds_with_the_same_fields_still_differ_by_kind():
    """A probe's and a patch's keys never meet, even where their settings would print alike."""

    @dataclass(frozen=True)
    class Same:
        attribute: str = "job"

    assert _key(model="mix", settings=Same()) != _key(model="mix", settings=Same(), kind="patch")


def test_libraries_count_by_major_and_minor_version(monkeypatch):
    import numpy

    assert library_version("numpy") == ".".join(numpy.__version__.split(".")[:2])
    versions = {"torch": "2.13.0+cpu", "numpy": "2.4.6"}
    monkeypatch.setattr(cache.importlib, "import_module", lambda name: type("M", (), {"__version__": versions[name]}))
    before = _key(model="mix", libraries=("torch", "numpy"))
    versions.update(torch="2.13.1+cu126", numpy="2.4.7")  # a patch release, another build: the same key
    assert _key(model="mix", libraries=("torch", "numpy")) == before
    versions.update(torch="2.14.0")  # a minor release: another key
    assert _key(model="mix", libraries=("torch", "numpy")) != before
    versions.update(torch="nightly")
    with pytest.raises(ValueError, match="major.minor"):
        library_version("torch")


@pytest.mark.parametrize(
    "changes, error",
    [
        ({"version": 0}, ValueError),
        ({"version": True}, ValueError),
        ({"version": "1"}, ValueError),
        ({"kind": ""}, ValueError),
        ({"settings": {"attribute": "job"}}, TypeError),
        ({"settings": ProbeSettings}, TypeError),
        ({"store": "x"}, ValueError),  # an extra that would overwrite a named input
    ],
)
def test_a_key_of_unnamed_or_unversioned_inputs_is_refused(changes, error):
    with pytest.raises(error):
        _key(model="mix", **changes)


def test_a_key_is_the_same_in_another_process():
    """No hash randomisation, no object identity: another process (another user, tomorrow) finds it."""
    code = (
        "from store.cache import result_key\nfrom store.settings import PatchSettings\n"
        "print(result_key('patch', 1, PatchSettings(layers=(-1,)), 'f', model='mix'))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == result_key("patch", 1, PatchSettings(layers=(-1,)), "f", model="mix")
