"""The Defense-Prefix authors' shared `datasets/` folder (RTA-100 in `ours/data`, PAINT in
`typographic_real_data_from_PAINT/typographic_attacks`, Disentangling in
`typographic_attack_dataset`): each dataset reads only its own sub-folder and the run shows one
line naming what the folder holds; a folder with other datasets but not this one is an error."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from real_datasets_builders import OBJECTS, WORDS, make_disentangle, make_named_folder
from typoattack.cli import app
from typoattack.config.types import RealDataset
from typoattack.data.real_datasets import DATASET_FOLDERS, open_real_dataset
from typoattack.errors import DataError
from typoattack.backends.open_clip.model import TINY_MODEL

runner = CliRunner()
RTA, PAINT = "ours/data", "typographic_real_data_from_PAINT/typographic_attacks"
N_RTA = len(OBJECTS) * len(WORDS)  # 9
N_PAINT = N_RTA + 1  # one numbered second photo, so the two sets differ in size


@pytest.fixture
def shared(tmp_path) -> Path:
    root = tmp_path / "datasets"
    make_named_folder(root, sub=RTA)
    make_named_folder(root, sub=PAINT, numbered=True)
    return root


def test_each_dataset_reads_only_its_own_sub_folder(shared) -> None:
    assert DATASET_FOLDERS[RealDataset.RTA100] == RTA and DATASET_FOLDERS[RealDataset.PAINT] == PAINT
    rta = open_real_dataset(RealDataset.RTA100, str(shared))
    paint = open_real_dataset(RealDataset.PAINT, str(shared))
    assert len(rta.items) == N_RTA and len(paint.items) == N_PAINT
    # Each reads its own files: the 9 on disk under ours/data, the 10 under the PAINT folder (ids
    # relative to --data, as before).
    assert sorted(i.image_id for i in rta.items) == sorted(f"{RTA}/{p.name}" for p in (shared / RTA).iterdir())
    assert sorted(i.image_id for i in paint.items) == sorted(f"{PAINT}/{p.name}" for p in (shared / PAINT).iterdir())
    assert rta.description == f"rta100:{(shared / RTA).resolve()}"
    assert rta.open_image(0).size == (96, 80)
    for source, name, folder in ((rta, "RTA-100", RTA), (paint, "PAINT", PAINT)):
        assert len(source.notes) == 1
        note = source.notes[0]
        assert str(shared) in note and f"RTA-100 ({RTA})" in note and f"PAINT ({PAINT})" in note
        assert note.endswith(f"reading {name} from {folder} only")
    # A folder of one dataset alone (or the sub-folder itself) reads as before, without a note.
    alone = open_real_dataset(RealDataset.RTA100, str(shared / RTA))
    assert [f"{RTA}/{i.image_id}" for i in alone.items] == [i.image_id for i in rta.items] and alone.notes == []


def test_folder_dataset_reads_everything_and_says_so(shared) -> None:
    source = open_real_dataset(RealDataset.FOLDER, str(shared))
    assert len(source.items) == N_RTA + N_PAINT
    assert len(source.notes) == 1 and "--dataset folder reads every image below it" in source.notes[0]


def test_another_datasets_root_is_refused_naming_what_it_holds(tmp_path) -> None:
    root = tmp_path / "datasets"
    make_named_folder(root, sub=RTA)
    with pytest.raises(DataError, match=rf"holds RTA-100 \({RTA}\) but no PAINT folder \({PAINT}\); "
                                        r"pass --dataset rta100"):
        open_real_dataset(RealDataset.PAINT, str(root))
    with pytest.raises(DataError, match=r"holds RTA-100 \(ours/data\) but no Disentangling folder "
                                        r"\(typographic_attack_dataset\)"):
        open_real_dataset(RealDataset.DISENTANGLE, str(root))


def test_disentangling_beside_them_is_found_and_ignored_by_the_others(shared) -> None:
    make_disentangle(shared / "typographic_attack_dataset")
    # Disentangling's IMG_*.JPG names would not parse as label=…_text=… files: RTA-100 must not read them.
    rta = open_real_dataset(RealDataset.RTA100, str(shared))
    assert len(rta.items) == N_RTA and "Disentangling (typographic_attack_dataset)" in rta.notes[0]
    dis = open_real_dataset(RealDataset.DISENTANGLE, str(shared))
    assert len(dis.items) == 6 and dis.notes[0].endswith("reading Disentangling from typographic_attack_dataset only")


def test_real_run_on_the_shared_root_scores_its_own_photos_and_shows_the_line(shared, tmp_path, cache_dir) -> None:
    counts = {}
    for dataset in ("rta100", "paint"):
        out = tmp_path / dataset
        result = runner.invoke(app, ["real", "--dataset", dataset, "--data", str(shared), "--model", TINY_MODEL,
                                     "--pretrained", "seed:0", "--device", "cpu", "--workers", "1",
                                     "--cache-dir", str(cache_dir), "--out", str(out)])
        assert result.exit_code == 0, result.output
        shown = " ".join(result.output.split())  # the console wraps long lines
        assert f"holds several datasets: RTA-100 ({RTA}), PAINT ({PAINT})" in shown
        records = pd.read_parquet(out / "records.parquet")
        counts[dataset] = len(records)
        assert set(records["dataset"]) == {dataset}
        info = json.loads((out / "run.json").read_text())
        assert len(info["dataset"]["notes"]) == 1
    assert counts == {"rta100": N_RTA, "paint": N_PAINT}
