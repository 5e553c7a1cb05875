import os

from pixbatch.io.discover import plan_jobs, remove_stale_temps


def touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_mirrors_tree_and_maps_formats(tmp_path):
    src = tmp_path / "in"
    for rel in ["a.png", "sub/b.JPG", "sub/deep/c.tif", "d.bmp", "notes.txt", ".hidden.png"]:
        touch(src / rel)
    plan = plan_jobs([src], tmp_path / "out", suffix="_x4")
    got = sorted(j.dst.relative_to(tmp_path / "out").as_posix() for j in plan.todo)
    assert got == ["a_x4.png", "d_x4.png", "sub/b_x4.jpg", "sub/deep/c_x4.tif"]
    plan = plan_jobs([src], tmp_path / "out", fmt="webp")
    assert {j.dst.suffix for j in plan.todo} == {".webp"}


def test_files_and_glob(tmp_path):
    src = tmp_path / "in"
    touch(src / "keep.png"), touch(src / "skip.jpg"), touch(src / "sub/keep2.png")
    single = touch(tmp_path / "one.jpg")
    plan = plan_jobs([src, single], tmp_path / "out", glob="*.png")
    assert sorted(j.dst.name for j in plan.todo) == ["keep.png", "keep2.png", "one.jpg"]


def test_skip_existing_and_overwrite(tmp_path):
    src = tmp_path / "in"
    touch(src / "a.png"), touch(src / "b.png")
    touch(tmp_path / "out" / "a.png")
    plan = plan_jobs([src], tmp_path / "out")
    assert [j.src.name for j in plan.todo] == ["b.png"] and [j.src.name for j in plan.skipped] == ["a.png"]
    plan = plan_jobs([src], tmp_path / "out", overwrite=True)
    assert len(plan.todo) == 2 and not plan.skipped


def test_collisions_and_self_overwrite_are_problems(tmp_path):
    src = tmp_path / "in"
    touch(src / "a.png"), touch(src / "a.jpg")
    plan = plan_jobs([src], tmp_path / "out", fmt="png")
    assert len(plan.todo) == 1
    assert len(plan.problems) == 1 and "is also the output of" in plan.problems[0].reason
    plan = plan_jobs([src], src, fmt="same")  # writing into the input folder would replace the inputs
    assert not plan.todo and len(plan.problems) == 2
    assert all("would replace an input" in p.reason for p in plan.problems)


def test_missing_source_is_a_problem(tmp_path):
    plan = plan_jobs([tmp_path / "nope"], tmp_path / "out")
    assert plan.problems[0].reason == "no such file or folder"


def test_stale_temp_files_of_dead_runs_are_removed(tmp_path):
    dead = touch(tmp_path / ".a.png.pixbatch-999999999-abcd.tmp")
    alive = touch(tmp_path / f".b.png.pixbatch-{os.getpid()}-abcd.tmp")
    other = touch(tmp_path / "c.png")
    assert remove_stale_temps({tmp_path}) == 1
    assert not dead.exists() and alive.exists() and other.exists()
