"""Saving and restoring large `tf.train.Checkpoint`s: written through to disk, restored one variable at a time.

`tf.train.Checkpoint.restore` reads all tensors of a device in ONE RestoreV2 op: the whole checkpoint
is in memory next to the variables before any is assigned, and TF's CPU allocator keeps that peak
as resident memory (a 1000-teacher DataLens model: 3.4 GB built, 5.7 GB after a normal restore).
`restore_checkpoint` reads the same files variable by variable instead.

TF writes and reads checkpoints through the OS page cache, which then holds a second copy of the whole
checkpoint. Where the machine pays for each page it hands out fresh (a virtual machine whose host backs
guest memory on first touch), that copy costs more than the disk: a 9-GB 4000-teacher checkpoint took
77 s to save, almost all of it system time, against 8-11 s when each file goes to disk and leaves the
cache as it is written (`save_checkpoint`), so the kernel reuses the same few pages throughout.

A `tf.train.CheckpointManager` keeps its latest checkpoint until the next one is complete, so every save needs
free disk space for one more checkpoint: `check_room_for_checkpoint` tells a run whether its next save will
fit before it trains on, and a failed save leaves no partial files behind.
"""

import contextlib
import errno
import glob
import numbers
import os
import shutil
import threading

import tensorflow as tf
from tensorflow import keras
from tensorflow.python.checkpoint import util as checkpoint_util
from tensorflow.python.trackable import trackable_utils

_OBJECT_GRAPH = "_CHECKPOINTABLE_OBJECT_GRAPH"
_SAVE_COUNTER = "save_counter/.ATTRIBUTES/VARIABLE_VALUE"
_SLOT = "/.OPTIMIZER_SLOT/"
_LAZY_OPTIMIZERS = (keras.optimizers.Optimizer, keras.optimizers.legacy.Optimizer)


def _owner_path(key):
    """Object path of a checkpoint key; for a slot variable, the path of its optimizer's slot."""
    path = trackable_utils.extract_object_name(key) if "/.ATTRIBUTES" in key else key
    return path.split(_SLOT, 1)[1] if _SLOT in path else path


def _lazy_owner(path, objects):
    """The nearest live Keras optimizer among the ancestors of `path`, or None."""
    parts = path.split("/")
    for i in range(len(parts), 0, -1):
        owner = objects.get("/".join(parts[:i]))
        if isinstance(owner, _LAZY_OPTIMIZERS):
            return owner
    return None


def _list(items, limit=8):
    items = sorted(items)
    return "\n  ".join(items[:limit] + ([f"... ({len(items) - limit} more)"] if len(items) > limit else []))


def _flush_and_drop(paths):
    """Writes each file's dirty pages to disk, then drops its pages from the page cache (Linux; else a no-op)."""
    if not hasattr(os, "posix_fadvise"):
        return
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue  # renamed or deleted by the writer meanwhile
        try:
            os.fdatasync(fd)  # only clean pages can be dropped
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass
        finally:
            os.close(fd)


def _files_under(directory):
    return [os.path.join(root, name) for root, _, names in os.walk(directory) for name in names]


@contextlib.contextmanager
def _written_through(directory, interval=0.1):
    """While the body runs, every `interval` seconds, flushes the files under `directory` and drops them from the cache."""
    done = threading.Event()

    def loop():
        while not done.wait(interval):
            _flush_and_drop(_files_under(directory))

    thread = threading.Thread(target=loop, name="checkpoint-write-through", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        _flush_and_drop(_files_under(directory))


def save_checkpoint(manager, checkpoint_number=None):
    """`manager.save(checkpoint_number)` with its files flushed to disk and dropped from the page cache as they are written.

    The checkpoint and its format are `tf.train.CheckpointManager`'s; only the way its bytes reach the disk
    changes: a helper thread flushes the files under `manager.directory` (`fdatasync`) and drops them from
    the page cache (`POSIX_FADV_DONTNEED`) every 0.1 s while TF writes them, and once more at the end. So
    the save returns with the checkpoint on disk, and the page cache holds only what TF wrote since the
    thread's last pass. Where the OS lacks `posix_fadvise` it is a plain `manager.save`.

    Args:
      manager: a `tf.train.CheckpointManager`.
      checkpoint_number: None (the manager's save counter) or an integer >= 0, as for `manager.save`.

    Returns:
      The path of the new checkpoint, as `manager.save`.

    Raises:
      OSError: if the save fails (say, the disk is full), after removing its partial files; the manager's latest
        checkpoint is still the previous one.
    """
    if not isinstance(manager, tf.train.CheckpointManager):
        raise ValueError(f"Received an invalid value for `manager`, expected a tf.train.CheckpointManager. "
                         f"Received: {type(manager).__name__}")
    if checkpoint_number is not None and (isinstance(checkpoint_number, bool) or not isinstance(
            checkpoint_number, numbers.Integral) or checkpoint_number < 0):
        raise ValueError(f"Received an invalid value for `checkpoint_number`, expected None or an integer >= 0. "
                         f"Received: checkpoint_number={checkpoint_number!r}")
    os.makedirs(manager.directory, exist_ok=True)
    partial = os.path.join(glob.escape(manager.directory), "*_temp")  # where TF writes a checkpoint's shards first
    before = set(glob.glob(partial))
    try:
        # Where the OS lacks posix_fadvise there is nothing to drop: no helper thread.
        with _written_through(manager.directory) if hasattr(os, "posix_fadvise") else contextlib.nullcontext():
            return manager.save(checkpoint_number=checkpoint_number)
    except (tf.errors.OpError, OSError) as e:
        for path in set(glob.glob(partial)) - before:
            shutil.rmtree(path, ignore_errors=True)
        raise OSError(f"Saving a checkpoint in {manager.directory} failed (its partial files are removed; the latest "
                      f"complete checkpoint is {manager.latest_checkpoint}): {e}") from e


def checkpoint_bytes(save_path):
    """Bytes on disk of the checkpoint at `save_path` (its `.index` and `.data-*` files)."""
    index = str(save_path) + ".index"
    if not os.path.isfile(index):
        raise ValueError(f"No checkpoint at save_path={save_path!r} (no {index})")
    return sum(os.path.getsize(path) for path in [index] + glob.glob(glob.escape(str(save_path)) + ".data-*"))


def check_room_for_checkpoint(manager, margin=0.02):
    """Raises OSError (ENOSPC) unless the disk of `manager.directory` has room for one more checkpoint.

    The next save needs free space for a checkpoint the size of the manager's latest one (plus `margin` of it),
    since the latest is deleted only once the next is complete. Returns the free bytes, or None before the first
    checkpoint (nothing to measure).
    """
    if not isinstance(manager, tf.train.CheckpointManager):
        raise ValueError(f"Received an invalid value for `manager`, expected a tf.train.CheckpointManager. "
                         f"Received: {type(manager).__name__}")
    if isinstance(margin, bool) or not isinstance(margin, numbers.Real) or not 0 <= margin < 1:
        raise ValueError(f"Received an invalid value for `margin`, expected a number in [0, 1). "
                         f"Received: margin={margin!r}")
    if manager.latest_checkpoint is None:
        return None
    needed = checkpoint_bytes(manager.latest_checkpoint) * (1 + margin)
    free = shutil.disk_usage(manager.directory).free
    if free < needed:
        raise OSError(errno.ENOSPC, f"No room for the next checkpoint in {manager.directory}: it needs "
                      f"{needed / 1e9:.2f} GB (the size of {os.path.basename(manager.latest_checkpoint)} and "
                      f"{margin:.0%}), {free / 1e9:.2f} GB are free")
    return free


def restore_checkpoint(checkpoint, save_path):
    """Restores `checkpoint` (a `tf.train.Checkpoint`) from `save_path` with one variable in memory at a time.

    It reads the files that `checkpoint.save` writes (format unchanged) and gives the same values as
    `checkpoint.restore(save_path)`, but each variable is read by its own RestoreV2 op and assigned in
    place, so the peak memory is the variables plus the largest one, not plus the whole checkpoint.
    Each variable's pages leave the page cache once it is read (see the module's docstring).
    Keys are those TF's saver gives the live object graph. What a Keras optimizer creates lazily (its
    slots, before its first step) is left to a normal restore of the optimizer alone, which TF applies
    when the variables are created. Eager mode only.

    Raises:
      ValueError: before any variable changes, if the checkpoint is not found, lacks a variable of the
        object graph, holds one with another shape or dtype, or holds values that no variable (nor a
        lazily built optimizer) takes; if a value cannot be read, naming it (earlier ones are restored).
    """
    if not tf.executing_eagerly():
        raise RuntimeError("restore_checkpoint runs eagerly, not inside a tf.function")
    if not isinstance(checkpoint, tf.train.Checkpoint):
        raise ValueError(f"Received an invalid value for `checkpoint`, expected a tf.train.Checkpoint. "
                         f"Received: {type(checkpoint).__name__}")
    try:
        reader = tf.train.load_checkpoint(save_path)
    except (tf.errors.OpError, ValueError, TypeError) as e:
        raise ValueError(f"No readable checkpoint at save_path={save_path!r}: {e}") from e
    shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
    if _SAVE_COUNTER in shapes:  # `save` writes it, `write` does not
        checkpoint.save_counter  # noqa: B018  creates it, as `Checkpoint.restore` does

    # The saver's own view of the object graph, so that keys are the ones `checkpoint.save` writes.
    objects, node_paths, _, _, names = checkpoint_util.objects_ids_and_slot_variables_and_paths(
        checkpoint._saver._graph_view)  # pylint: disable=protected-access
    variables, by_path = {}, {}
    for obj in objects:
        by_path[names[obj]] = obj
        if isinstance(obj, tf.Variable):
            variables[trackable_utils.checkpoint_key(names[obj], "VARIABLE_VALUE")] = obj
    if _SAVE_COUNTER not in shapes:
        variables.pop(_SAVE_COUNTER, None)

    missing = [k for k in variables if k not in shapes]
    mismatched = [f"{k}: checkpoint {dtypes[k].name} {list(shapes[k])}, model {v.dtype.name} {v.shape.as_list()}"
                  for k, v in variables.items()
                  if k in shapes and (dtypes[k] != v.dtype.base_dtype or not v.shape.is_compatible_with(shapes[k]))]
    lazy, unknown = {}, []
    for key in set(shapes) - set(variables) - {_OBJECT_GRAPH}:
        owner = _lazy_owner(_owner_path(key), by_path)
        if owner is not None:
            lazy[id(owner)] = owner
        else:
            unknown.append(key)
    problems = [f"{what}:\n  {_list(keys)}" for what, keys in (
        ("variables of the model missing from the checkpoint", missing),
        ("variables whose shape or dtype differ", mismatched),
        ("checkpoint values that no variable of the model takes", unknown)) if keys]
    if problems:
        raise ValueError(f"The checkpoint {save_path} does not match the model (nothing was restored); "
                         + "; ".join(problems))

    files = glob.glob(glob.escape(save_path) + ".data-*")
    for key in sorted(variables):  # the file's order
        variable = variables[key]
        try:
            with tf.device("CPU:0"):
                value = tf.raw_ops.RestoreV2(prefix=save_path, tensor_names=[key], shape_and_slices=[""],
                                             dtypes=[variable.dtype.base_dtype])[0]
        except tf.errors.OpError as e:
            raise ValueError(f"Cannot read {key} from the checkpoint {save_path} (variables before it in key "
                             f"order are restored, the others are not): {e.message}") from e
        variable.assign(value)
        del value
        _flush_and_drop(files)

    for optimizer in lazy.values():
        # Its variables are tiny next to the teachers'; the normal restore also covers those created later.
        path = node_paths[optimizer]
        node = optimizer
        for ref in reversed(path[1:]):
            holder = tf.__internal__.tracking.AutoTrackable()
            setattr(holder, ref.name, node)
            node = holder
        tf.train.Checkpoint(**{path[0].name: node}).read(save_path).assert_existing_objects_matched().expect_partial()
