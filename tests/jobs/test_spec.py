"""The spec: presets, config files and overrides layer predictably, and names identify configurations."""

from jobs.run.spec import build_spec


def test_a_layer_that_sets_epochs_clears_the_presets_steps():
    paper = build_spec("paper")
    assert paper.train.bio.steps == 6820 and paper.train.bio.epochs is None
    from_file = build_spec("paper", config={"train": {"bio": {"epochs": 3}}})
    assert from_file.train.bio.epochs == 3 and from_file.train.bio.steps is None
    from_flag = build_spec("tiny", overrides=["train.mix.steps=50"])
    assert from_flag.train.mix.steps == 50 and from_flag.train.mix.epochs is None


def test_names_identify_the_configuration_not_the_seed():
    stock = build_spec("cpu", seed=1)
    assert stock.default_name() == "cpu-stage+mix-s1"
    a = build_spec("cpu", seed=0, overrides=["data.people=2000"])
    b = build_spec("cpu", seed=2, overrides=["data.people=2000"])
    assert a.default_name().endswith(a.config_hash()) and a.config_hash() == b.config_hash()
    assert a.config_hash() != stock.config_hash()
    # The device is not part of a run's identity: a run may resume on another machine.
    assert build_spec("cpu", device="cuda").identity() == build_spec("cpu").identity()


def test_phases_follow_the_strategies():
    names = lambda *s: [p.name for p in build_spec("tiny", strategies=s).phases()]  # noqa: E731
    assert names("stage", "mix") == ["bio", "stage", "mix"]
    assert names("bio", "stage") == ["bio", "stage"]
    assert names("qa") == ["qa"]
    stage = build_spec("tiny", strategies=["stage"]).phases()[1]
    assert stage.start == "bio" and stage.sets == ("qa_in",)


def test_a_phase_key_covers_the_phases_it_starts_from_and_nothing_else():
    base = build_spec("cpu")
    hotter_qa = build_spec("cpu", overrides=["train.qa.lr=1e-3"])
    hotter_bio = build_spec("cpu", overrides=["train.bio.lr=1e-3"])
    assert hotter_qa.phase_key("bio") == base.phase_key("bio")
    assert hotter_qa.phase_key("mix") == base.phase_key("mix")
    assert hotter_qa.phase_key("stage") != base.phase_key("stage")
    assert hotter_bio.phase_key("stage") != base.phase_key("stage")  # stage starts from bio
    assert hotter_bio.phase_key("mix") == base.phase_key("mix")
    assert build_spec("cpu", seed=1).phase_key("bio") != base.phase_key("bio")
    assert build_spec("cpu", overrides=["train.row_len=256"]).phase_key("mix") != base.phase_key("mix")
    assert build_spec("cpu", overrides=["train.checkpoint_every=7"]).phase_key("mix") == base.phase_key("mix")
    qa_only = build_spec("cpu", strategies=("qa",))
    assert qa_only.phase_key("qa") != base.phase_key("stage")  # same settings, different start


def test_snapshots_are_part_of_a_runs_identity_only_when_kept():
    base = build_spec("cpu")
    assert "snapshots" not in base.identity()["train"]  # runs made before the setting keep their names and keys
    kept = build_spec("cpu", overrides=["train.snapshots=4"])
    assert kept.identity()["train"]["snapshots"] == 4
    assert kept.phase_key("mix") != base.phase_key("mix")  # a run without them cannot lend its phase
    assert kept.default_name() != base.default_name() == "cpu-stage+mix-s0"


def test_full_name_is_part_of_a_runs_identity_only_when_on():
    base = build_spec("cpu")
    assert "full_name" not in base.identity()["data"]
    named = build_spec("cpu", overrides=["data.full_name=true"])
    assert named.identity()["data"]["full_name"] is True
    assert named.phase_key("bio") != base.phase_key("bio") and named.default_name() != base.default_name()


def test_settings_added_later_leave_the_runs_made_before_their_names_and_phase_keys():
    """The whole class, not one setting: a setting added to the spec without a NEWCOMERS entry (its
    "as before" value) changes these hashes, and every run made before it would be renamed and
    retrained. Pinned from the code of 2026-12-03; change them only on purpose."""
    for preset, config, keys in (
        ("cpu", "19e305", ("8b36544067f09722", "818994ecd037f025", "bfa65f13fb3f626b")),
        ("tiny", "971921", ("543b7ded2ed657fb", "b1fc46b24ec9a7fd", "99fc7e9516826144")),
    ):
        spec = build_spec(preset)
        assert spec.config_hash() == config, preset
        assert tuple(spec.phase_key(p) for p in ("bio", "stage", "mix")) == keys, preset
    fp32 = build_spec("cpu", overrides=["train.precision=fp32"])
    assert (fp32.config_hash(), fp32.phase_key("mix")) == ("ebdedc", "4313409d2094f911")


def test_the_stock_presets_generate_the_same_people_entries_and_prompts():
    """The data files of a run made before are made again to the letter: people, BIO entries and
    prompts of seed 0, pinned from the code of 2026-12-07 (faker 40.63) before the house's round two
    moved code, and equal after it. A faker release that changes its lists changes these too: then
    the runs made before it are new runs' data no longer (their folders keep what they were made with)."""
    import dataclasses
    import hashlib
    import json

    import faker
    import pytest

    from jobs.run.corpus import bio_entries, prompts
    from jobs.run.people import generate_people

    def digest(items) -> str:
        rows = [dataclasses.asdict(x) if dataclasses.is_dataclass(x) else x for x in items]
        return hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()[:16]

    if faker.VERSION.split(".")[0] != "40":
        pytest.skip(f"pinned with faker 40; this is faker {faker.VERSION}")
    for preset, pinned in (
        ("tiny", ("9be8c16043f8e2c8", "49e94d9dd45e6efc", "1866c8e378ab7c29")),
        ("cpu", ("267e8c2b819f3051", "105c9a4d593eec75", "21c3df7aff6178d8")),
    ):
        data = build_spec(preset).data
        people = generate_people(data, 0)
        entries = bio_entries(people, data, 0)
        assert (digest(people), digest(entries), digest(prompts(people, entries))) == pinned, preset


def test_every_preset_is_valid_and_listed_by_what_reads_presets(capsys):
    """Each preset file makes a spec, and `factrecall-jobs presets` describes it, a preset that names
    its model (`smol`: an imported model) as well as those that build one."""
    from jobs.cli import main
    from jobs.run.spec import preset_names

    assert {"cpu", "paper", "smol", "tiny"} <= set(preset_names())
    specs = {name: build_spec(name) for name in preset_names()}
    assert specs["smol"].model.path == "smollm2-135m" and specs["cpu"].model.path is None
    assert main(["presets"]) == 0
    listed = {line.split(":")[0].replace(" (default)", ""): line for line in capsys.readouterr().out.splitlines()}
    assert set(listed) == set(preset_names())
    assert "model smollm2-135m;" in listed["smol"] and "model 4x128;" in listed["cpu"]
