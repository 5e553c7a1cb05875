import os
import time

import numpy as np
import pytest
from PIL import Image

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
    touch(tmp_path / "in" / "a.png")
    plan = plan_jobs([tmp_path / "nope", tmp_path / "in"], tmp_path / "out")
    assert plan.problems[0].reason == "no such file or folder"
    assert [j.src.name for j in plan.todo] == ["a.png"]


def test_no_existing_source_at_all_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or folder: "):
        plan_jobs([tmp_path / "nope", tmp_path / "neither"], tmp_path / "out")


def test_stale_temp_files_of_dead_runs_are_removed(tmp_path):
    dead = touch(tmp_path / ".a.png.pixbatch-999999999-abcd.tmp")
    alive = touch(tmp_path / f".b.png.pixbatch-{os.getpid()}-abcd.tmp")
    other = touch(tmp_path / "c.png")
    dead_folder = tmp_path / ".clip.pixbatch-999999999-abcd.tmp"  # a video's frames being joined
    touch(dead_folder / "clip_000000.png")
    assert remove_stale_temps({tmp_path}) == 2
    assert not dead.exists() and not dead_folder.exists() and alive.exists() and other.exists()


def test_temp_files_of_other_hosts_are_left_until_they_are_old(tmp_path):
    """On a shared file system another host's live run cannot be checked: its temporary files are
    kept unless older than FOREIGN_TEMP_TTL; this host's are judged by their process."""
    from pixbatch.io.atomic import FOREIGN_TEMP_TTL, HOST_ID, temp_path

    mine = temp_path(tmp_path / "m.png")
    assert f"-{HOST_ID}-" in mine.name and mine.name.startswith(".m.png.pixbatch-")
    touch(mine)
    dead_here = touch(tmp_path / f".d.png.pixbatch-999999999-{HOST_ID}-abcd.tmp")
    foreign = touch(tmp_path / ".f.png.pixbatch-999999999-0badc0de-abcd.tmp")
    old_foreign = touch(tmp_path / ".o.png.pixbatch-999999999-0badc0de-abcd.tmp")
    past = time.time() - FOREIGN_TEMP_TTL - 60
    os.utime(old_foreign, (past, past))
    assert remove_stale_temps({tmp_path}) == 2
    assert mine.exists() and foreign.exists() and not dead_here.exists() and not old_foreign.exists()


# -- adversarial inputs: each is one problem line for its own path; the rest is planned -------------

def test_symlink_loops_broken_links_and_fifos_are_problems_not_crashes(tmp_path):
    src = tmp_path / "in"
    touch(src / "good.png")
    os.symlink("self.png", src / "self.png")  # a loop
    os.symlink("a.png", src / "b.png")
    os.symlink("b.png", src / "a.png")  # a two-link loop
    os.symlink("gone.png", src / "dangling.png")
    os.mkfifo(src / "pipe.png")
    plan = plan_jobs([src], tmp_path / "out")
    assert [j.src.name for j in plan.todo] == ["good.png"]
    reasons = {p.path.name: p.reason for p in plan.problems}
    assert reasons == {
        "self.png": "symbolic link loop", "a.png": "symbolic link loop", "b.png": "symbolic link loop",
        "dangling.png": "broken symbolic link (its target does not exist)",
        "pipe.png": "not a regular file (a FIFO, socket or device is never read)",
    }
    plan = plan_jobs([src / "self.png"], tmp_path / "out")  # named directly
    assert [(p.path.name, p.reason) for p in plan.problems] == [("self.png", "symbolic link loop")]


@pytest.mark.parametrize("suffix", ["/../../../escaped", "/", "a/b", "x\\y", "nul\0"])
def test_suffix_with_path_separators_is_refused(tmp_path, suffix):
    touch(tmp_path / "in" / "a.png")
    with pytest.raises(ValueError, match="cannot be part of a file name"):
        plan_jobs([tmp_path / "in"], tmp_path / "out", suffix=suffix)


def test_an_output_reached_through_a_symlinked_folder_outside_dst_is_a_problem(tmp_path):
    touch(tmp_path / "in" / "sub" / "a.png")
    (tmp_path / "out").mkdir()
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "out" / "sub")
    plan = plan_jobs([tmp_path / "in"], tmp_path / "out")
    assert not plan.todo
    assert plan.problems[0].reason.startswith(f"output {tmp_path / 'out' / 'sub' / 'a.png'} would be written "
                                              f"outside {tmp_path / 'out'}")


def test_destination_inside_the_source_is_never_read(tmp_path):
    nest = tmp_path / "nest"
    touch(nest / "a.png"), touch(nest / "sub" / "b.png")
    touch(nest / "out" / "a.png"), touch(nest / "out" / "sub" / "b.png")  # a previous run's outputs
    plan = plan_jobs([nest], nest / "out")
    assert sorted(j.src.name for j in plan.skipped) == ["a.png", "b.png"]
    assert not plan.todo and not plan.problems
    assert plan.notes == [f"{nest / 'out'}: the destination folder, not read as input"]


def test_own_outputs_beside_the_inputs_are_not_inputs(tmp_path):
    src = tmp_path / "in"
    touch(src / "bird.png")
    plan = plan_jobs([src], src, suffix="_x2")
    assert [j.dst.name for j in plan.todo] == ["bird_x2.png"]
    touch(src / "bird_x2.png")  # what that run wrote
    plan = plan_jobs([src], src, suffix="_x2")
    assert not plan.todo and not plan.problems and [j.src.name for j in plan.skipped] == ["bird.png"]
    assert plan.notes == [f"{src / 'bird_x2.png'}: the output of {src / 'bird.png'}, not read as input"]


def test_a_dangling_symlink_at_an_output_path_is_a_problem_not_a_skip(tmp_path):
    touch(tmp_path / "in" / "a.png")
    (tmp_path / "out").mkdir()
    os.symlink("nowhere.png", tmp_path / "out" / "a.png")
    plan = plan_jobs([tmp_path / "in"], tmp_path / "out")
    assert not plan.todo and not plan.skipped
    assert plan.problems[0].reason == (f"output {tmp_path / 'out' / 'a.png'} is a broken symbolic link; "
                                       "remove it (or --overwrite replaces the link)")
    plan = plan_jobs([tmp_path / "in"], tmp_path / "out", overwrite=True)
    assert len(plan.todo) == 1


def test_collision_hint_fits_the_command(tmp_path):
    touch(tmp_path / "in" / "a.png"), touch(tmp_path / "in" / "a.jpg")
    plan = plan_jobs([tmp_path / "in"], tmp_path / "out", suffix_of=lambda p: ".png")
    assert plan.problems[0].reason.endswith("; rename one of them")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every folder")
def test_an_unreadable_folder_is_a_problem(tmp_path):
    touch(tmp_path / "in" / "a.png")
    touch(tmp_path / "in" / "locked" / "b.png")
    (tmp_path / "in" / "locked").chmod(0)
    try:
        plan = plan_jobs([tmp_path / "in"], tmp_path / "out")
    finally:
        (tmp_path / "in" / "locked").chmod(0o755)
    assert [j.src.name for j in plan.todo] == ["a.png"]
    assert plan.problems[0].reason.startswith("cannot list folder")


def test_symbolic_links_to_folders_are_not_followed_and_say_so(tmp_path):
    """A folder reached through a symbolic link inside SRC is left out (it may point anywhere, even to
    an ancestor), with a note for -v; naming it as an input reads it."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(elsewhere / "b.png")
    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(src / "a.png")
    (src / "linked").symlink_to(elsewhere)
    plan = plan_jobs([src], tmp_path / "out")
    assert [j.src.name for j in plan.todo] == ["a.png"]
    assert [n for n in plan.notes if "linked" in n] == [
        f"{src / 'linked'}: a symbolic link to a folder, not followed (name it as an input to read it)"]
    assert [j.src.name for j in plan_jobs([src / "linked"], tmp_path / "out").todo] == ["b.png"]
