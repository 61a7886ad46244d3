r"""TensorBoard event files beside `metrics.jsonl`, written with tensorboardX (no TensorFlow).

Every run of the shared loop (`experiments.train`) and of `experiments.continual` writes each
logged record's numbers as scalars to `<workdir>/tensorboard/`:

    tensorboard --logdir workdirs/            # every run under workdirs/, one curve each
    pip install tensorboard                   # the viewer (not a dependency of this project)

A resumed run purges the events after the step it resumes from (`purge_step`), so a curve
never shows the steps of an interrupted attempt twice; `config.overwrite` removes the folder
with the rest of the run. `metrics.jsonl` stays the file the tables and plots read;
`read_scalars` reads the events back (tests, notebooks).
"""

from __future__ import annotations

import collections
import glob
import math
import os
import struct
import time
from collections.abc import Mapping
from typing import Any

from hypernet import parallel

EVENTS_DIR = 'tensorboard'


class EventWriter:
  """Scalars of log records to `<workdir>/tensorboard/` (a context manager).

  Args:
    workdir: the run's folder.
    start_step: the step the run starts or resumes from; events of steps >= it that an
      earlier attempt wrote are hidden by TensorBoard (0: a fresh run, nothing purged).

  In a multi-process run only process 0 writes (the others' writers do nothing).
  """

  def __init__(self, workdir: str, start_step: int = 0):
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    self.logdir = os.path.join(workdir, EVENTS_DIR)
    # tensorboardX names a file by the second it opens; the suffix keeps a second attempt
    # within the same second from replacing the first's file (and sorts after it).
    self._writer = (SummaryWriter(logdir=self.logdir, purge_step=start_step or None,
                                  flush_secs=30, filename_suffix=f'.{time.time_ns()}')
                    if parallel.is_primary() else None)

  def write(self, step: int, record: Mapping[str, Any], skip: tuple[str, ...] = ()) -> None:
    """Each finite number of `record` (bools, strings and the names in `skip` excepted) as
    the scalar of its name at `step`."""
    if self._writer is None:
      return
    for name, value in record.items():
      if name in skip or isinstance(value, bool) or not isinstance(value, (int, float)):
        continue
      if math.isfinite(value):
        self._writer.add_scalar(name, float(value), int(step))

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()

  def __enter__(self) -> EventWriter:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def read_scalars(logdir: str) -> dict[str, list[tuple[int, float]]]:
  """The scalars of every event file in `logdir` as `{tag: [(step, value), ...]}`, in file and
  write order, with TensorBoard's purge applied (a `purge_step` drops the earlier files'
  points at steps >= it).

  Raises:
    FileNotFoundError: `logdir` holds no event file.
    ValueError: a file that is not a TFRecord of events (naming it).
  """
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  paths = sorted(glob.glob(os.path.join(logdir, 'events.out.tfevents.*')))
  if not paths:
    raise FileNotFoundError(f'logdir: no events.out.tfevents.* file in {logdir!r}.')
  out: dict[str, list[tuple[int, float]]] = collections.defaultdict(list)
  for path in paths:
    with open(path, 'rb') as f:
      data = f.read()
    pos = 0
    while pos < len(data):
      if pos + 12 > len(data):
        raise ValueError(f'{path!r}: a record header cut short at byte {pos} (a TFRecord file '
                         'of events expected).')
      (length,) = struct.unpack('<Q', data[pos:pos + 8])
      body = data[pos + 12:pos + 12 + length]
      if len(body) != length:
        raise ValueError(f'{path!r}: a record of {length} bytes cut short at byte {pos}.')
      pos += 12 + length + 4  # length, its crc, the event, its crc
      event = event_pb2.Event()
      event.ParseFromString(body)
      if event.HasField('session_log') and event.session_log.status == event.session_log.START:
        for tag in out:  # TensorBoard's purge: an interrupted attempt's later points go
          out[tag] = [(s, v) for s, v in out[tag] if s < event.step]
      for value in event.summary.value:
        out[value.tag].append((int(event.step), float(value.simple_value)))
  return dict(out)
