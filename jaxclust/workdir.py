"""A run's directory: where it is, its files, its configuration and its lock.

A workdir is a local path or a URL that etils.epath opens (``gs://``, ``s3://``, ...; the URL stays a
URL). Every file of a run goes through here, so each write is whole or absent after a kill: locally a
temporary file and ``os.replace``; on object stores one write is already atomic, and appending is a read
and a rewrite, since objects cannot be appended to.

Orbax checkpoints the same URLs; for ``gs://`` it also needs google-cloud-storage installed.
"""

from __future__ import annotations

import builtins
import datetime
import io
import json
import logging
import os
import re
import socket
import tempfile
import threading
import time
import uuid

import numpy as np
from etils import epath

RESUMABLE_CHANGES = ("data_dir", "eval_every", "recipe", "labels", "report")  # see check_same_config


def path(workdir) -> epath.Path:
  """``workdir`` as an epath: a local path made absolute, a URL kept as it is."""
  text = os.fspath(workdir)
  if "://" in text:
    try:
      return epath.Path(text)
    except (KeyError, NotImplementedError):  # etils has no class for the scheme
      raise ValueError(f"workdir {text!r}: etils.epath opens local paths and gs://, s3://, az://, "
                       "hf:// URLs only") from None
  if re.match(r"[a-z][a-z0-9+.-]*:/[^/]", text):
    raise ValueError(f"workdir {text!r} looks like a URL that lost a '/' (pathlib.Path('gs://b/r') is "
                     "'gs:/b/r'); pass the URL as a string")
  return epath.Path(os.path.abspath(os.path.expanduser(text)))


def _is_url(p) -> bool:
  return "://" in os.fspath(p)


def read_json(file):
  """The JSON value in ``file``; a ValueError naming the file if it is not JSON."""
  try:
    return json.loads(epath.Path(file).read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f"{file} is not valid JSON ({e})") from None


def write_bytes(file, data: bytes):
  """Writes ``file`` whole: after a kill it holds the old content or the new, never half."""
  file = epath.Path(file)
  if _is_url(file):  # an object store replaces an object in one write
    file.write_bytes(data)
    return
  tmp = file.with_name(f".{file.name}.{uuid.uuid4().hex}.tmp")  # unique: writers never share one
  tmp.write_bytes(data)
  os.replace(tmp, file)


def write_text(file, text: str):
  write_bytes(file, text.encode())


def write_json(file, value):
  write_text(file, json.dumps(value, indent=2))


def save_npy(file, array):
  """``np.save`` through a buffer: numpy writes to local paths only, epath to any."""
  buffer = io.BytesIO()
  np.save(buffer, np.asarray(array), allow_pickle=False)
  write_bytes(file, buffer.getvalue())


def load_npy(file) -> np.ndarray:
  return np.load(io.BytesIO(epath.Path(file).read_bytes()), allow_pickle=False)


def save_npz(file, **arrays):
  buffer = io.BytesIO()
  np.savez(buffer, **{k: np.asarray(v) for k, v in arrays.items()})
  write_bytes(file, buffer.getvalue())


def load_npz(file) -> dict:
  with np.load(io.BytesIO(epath.Path(file).read_bytes()), allow_pickle=False) as npz:
    return dict(npz)


def append_line(file, text: str):
  """Appends ``text`` and a newline (unless it ends with one) to ``file``, creating it if absent."""
  text = text if text.endswith("\n") else text + "\n"
  file = epath.Path(file)
  if _is_url(file):  # objects cannot be appended to: rewritten whole, one writer (the lead) at a time
    write_text(file, (file.read_text() if file.exists() else "") + text)
  else:
    with builtins.open(file, "a") as f:
      f.write(text)


def open(workdir) -> dict | None:  # pylint: disable=redefined-builtin
  """The summary of the run finished in ``workdir`` (its summary.json), or None. A ValueError refuses a
  workdir that is a file, or a local one that cannot be written (before anything is created in it)."""
  workdir = path(workdir)
  if not _is_url(workdir):
    nearest = workdir
    while not nearest.exists():
      nearest = nearest.parent
    if not nearest.is_dir():
      raise ValueError(f"workdir {workdir} is not a directory: {nearest} is a file")
    try:  # a trial beats os.access: read-only mounts, and root's access to every mode
      tempfile.TemporaryFile(dir=nearest).close()
    except OSError as e:
      raise ValueError(f"workdir {workdir} cannot be written ({nearest}: {e.strerror})") from None
  else:
    try:  # the first touch of the storage: an unreachable bucket is one line, not a client's traceback
      if workdir.exists() and not workdir.is_dir():
        raise ValueError(f"workdir {workdir} is a file, not a directory")
    except ValueError:
      raise
    except Exception as e:  # pylint: disable=broad-except  (storage clients raise many types)
      first = str(e).strip().splitlines()[0] if str(e).strip() else ""
      raise ValueError(f"workdir {workdir} cannot be reached ({type(e).__name__}: {first}); URL workdirs need "
                       "network access to the bucket and its client (pip install 'jaxclust[gcs]' for gs://)"
                       ) from None
  summary = workdir / "summary.json"
  return read_json(summary) if summary.exists() else None


def claim(workdir, config, *, lead: bool) -> epath.Path:
  """Creates ``workdir`` (``lead``: process 0 only) and writes or checks its config.json (see
  :func:`check_same_config`). Called once the data and the settings are known valid, so that a refused run
  leaves no directory behind."""
  workdir = path(workdir)
  if lead:
    workdir.mkdir(parents=True, exist_ok=True)
  check_same_config(workdir, config, write=lead)
  return workdir


def _flat(tree: dict, prefix: str = "") -> dict:
  """``{"cluster": {"tol": 0.1}}`` -> ``{"cluster.tol": 0.1}``: the ``--set`` names of a JSON config."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flat(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def check_same_config(workdir, config, write: bool = True):
  """Refuses a ``workdir`` whose config.json differs from ``config`` (ValueError naming the settings);
  writes it when absent (``write``: only the lead process writes)."""
  file = path(workdir) / "config.json"
  current = json.loads(config.to_json())
  if not file.exists():
    if write:
      write_text(file, json.dumps(current, indent=2, sort_keys=True))
    return
  saved, now = _flat(read_json(file)), _flat(current)
  # A setting that jaxclust gained after the run started is missing from its config.json. The run
  # trained as that setting's default does (new settings default to the old behaviour), so it may
  # resume with the setting at its default: upgrading the library does not cost a run.
  added = set()
  if set(now) - set(saved):
    from jaxclust import configs
    defaults = _flat(json.loads(configs.get_config(config.method, config.dataset,
                                                   recipe=config.get("recipe") or None).to_json()))
    # A method's LEGACY: settings added with a data-dependent default ("auto"), and what runs before them trained as.
    from jaxclust import methods
    legacy = getattr(methods.get(config.method), "LEGACY", {})
    added = {k for k in set(now) - set(saved) if k in defaults and now[k] in (defaults[k], legacy.get(k, defaults[k]))}
  # Settings that change neither training nor its result may differ: data_dir says where the files
  # are (moved data may resume), eval_every how often the readout is logged, recipe names where the
  # settings came from (the settings themselves are compared), labels are for evaluation only.
  absent = "(absent)"
  changed = {k for k in set(saved) | set(now) if (k in saved, saved.get(k)) != (k in now, now.get(k))}
  # Settings a method's configs carried without the method ever reading them, since removed (the method
  # module's RETIRED_SETTINGS): a run whose config.json holds them trained as without them, so it resumes.
  from jaxclust import methods
  retired = {k for k in set(saved) - set(now) if k in getattr(methods.get(config.method), "RETIRED_SETTINGS", ())}
  differ = sorted(changed - added - retired - set(RESUMABLE_CHANGES))
  if differ:
    shown = ", ".join(f"{k}: {saved.get(k, absent)!r} -> {now.get(k, absent)!r}" for k in differ)
    raise ValueError(f"{path(workdir)} holds a run with another configuration (differs in {shown}); "
                     "resume it with the same settings or choose another --workdir")
  if changed and write:  # record the settings the run now resumes with
    write_text(file, json.dumps(current, indent=2, sort_keys=True))


def train_seconds(workdir) -> float:
  """Seconds spent in the epochs (or DEC's step intervals) that made the run, summed over every process
  that worked on it: the ``seconds`` of metrics.jsonl's last record of each (stage, epoch or step), so an
  epoch redone after a kill counts once. 0.0 where the workdir has no metrics.jsonl (a non-lead process)."""
  file = path(workdir) / "metrics.jsonl"
  if not file.exists():
    return 0.0
  last = {}
  for line in file.read_text().splitlines():
    record = json.loads(line)
    if "seconds" in record:
      last[(record["stage"], record.get("epoch"), record.get("step"))] = record["seconds"]
  return float(sum(last.values()))


def _started(pid: int) -> str | None:
  """When process ``pid`` started (clock ticks since boot, /proc/PID/stat field 22), or None where
  unknown: with the pid, it names one process, since the kernel reuses pids."""
  try:
    with builtins.open(f"/proc/{pid}/stat") as f:
      return f.read().rpartition(")")[2].split()[19]
  except (OSError, IndexError):
    return None


def _alive(pid: int, started: str | None) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # another user's process: alive
    pass
  return started is None or _started(pid) in (None, started)


class Lock:
  """``WORKDIR/lock.json``: one process trains in a workdir at a time.

  A live holder's lock refuses everyone else at once (ValueError naming its pid, host and start). A lock
  is taken over, with a log message, when its holder is dead: on this host, its pid is gone or now names
  another process; on any host, its heartbeat (refreshed every ``heartbeat_s`` seconds by a daemon thread)
  is older than ``stale_s``. So a SIGKILL never leaves a workdir unusable.

  Locally the lock file appears whole or not at all (a hard link of a complete temporary file, or an
  exclusive create where links are unsupported), and a takeover first moves the dead holder's file
  aside atomically, so two processes never both hold it. Object stores have no create-if-absent: there
  the lock is written if absent and read back after a pause (1 s), a weaker guarantee: two processes
  could both hold it only if one stalled for longer than the pause between its check and its write.
  Only the lead process (process 0) locks; others get a lock that does nothing.
  """

  def __init__(self, workdir, *, lead: bool = True, heartbeat_s: float = 5.0, stale_s: float = 60.0, log=None):
    self.workdir, self.lead = path(workdir), lead
    self.file = self.workdir / "lock.json"
    self.heartbeat_s, self.stale_s = heartbeat_s, stale_s
    self.log = log or logging.getLogger(__name__).warning
    self.token, self._stop, self._thread = uuid.uuid4().hex, threading.Event(), None

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()

  def _record(self, start: float) -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "pid_started": _started(os.getpid()),
            "start": datetime.datetime.fromtimestamp(start).astimezone().isoformat(timespec="seconds"),
            "start_epoch": start, "heartbeat": time.time(), "token": self.token}

  def _read(self, file=None) -> dict | None:
    """The record in the lock (or ``file``); None when absent; an unreadable one counts by its age alone."""
    file = file or self.file
    try:
      return json.loads(file.read_text())
    except FileNotFoundError:
      return None
    except (ValueError, OSError):
      try:
        return {"heartbeat": file.stat().mtime}
      except FileNotFoundError:
        return None

  def _create(self, record: dict) -> bool:
    """Writes the lock if there is none; True if it is ours."""
    data = json.dumps(record).encode()
    if _is_url(self.file):
      if self.file.exists():
        return False
      self.file.write_bytes(data)
      time.sleep(min(1.0, self.heartbeat_s))  # a racing writer's lock lands within this pause
      return (self._read() or {}).get("token") == self.token
    tmp = self.file.with_name(f".lock.{self.token}.tmp")
    tmp.write_bytes(data)
    try:
      os.link(tmp, self.file)  # atomic, and fails if the lock exists
    except FileExistsError:
      return False
    except OSError:  # no hard links (some FUSE mounts): an exclusive create, the content follows
      try:
        fd = os.open(self.file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        return False
      with os.fdopen(fd, "wb") as f:
        f.write(data)
    finally:
      tmp.unlink(missing_ok=True)
    return True

  def _dead(self, holder: dict) -> str | None:
    """Why ``holder`` no longer holds the workdir, or None while it does."""
    age = time.time() - holder.get("heartbeat", 0.0)
    if age > self.stale_s:
      return f"its heartbeat is {age:.0f} s old (limit {self.stale_s:.0f} s)"
    pid, here = holder.get("pid"), holder.get("host") == socket.gethostname()
    if here and isinstance(pid, int) and pid > 0 and not _alive(pid, holder.get("pid_started")):
      return "that process is no longer running"
    return None

  def _remove(self, holder: dict) -> bool:
    """Removes the lock if it is still ``holder``'s; False if someone else's came in between."""
    if _is_url(self.file):
      self.file.unlink(missing_ok=True)
      return True
    aside = self.file.with_name(f".lock.{self.token}.dead")
    try:
      os.rename(self.file, aside)  # atomic: of two processes taking over, one moves the dead lock
    except FileNotFoundError:
      return False
    moved = (self._read(aside) or {}).get("token") == holder.get("token")
    if not moved:  # a new holder's lock, not the dead one: put it back
      try:
        os.link(aside, self.file)
      except OSError:  # yet another lock came in (or no hard links here): that one stands
        pass
    aside.unlink()
    return moved

  def acquire(self) -> Lock:
    """Takes the lock (creating the workdir), or raises a ValueError naming its live holder."""
    if not self.lead:
      return self
    self.workdir.mkdir(parents=True, exist_ok=True)
    if _is_url(self.file):
      return self._acquire(time.time())
    # On a local filesystem the whole look-and-take runs under an flock of a file that is never removed:
    # without it, a process putting back a live lock it moved aside while taking over a dead one could let
    # a third process in (two holders; seen once in 4-process races under load). The kernel releases the
    # flock when its holder dies, so it cannot be left behind.
    import fcntl
    with builtins.open(os.fspath(self.workdir / ".lock.mutex"), "a") as mutex:
      fcntl.flock(mutex, fcntl.LOCK_EX)
      return self._acquire(time.time())

  def _acquire(self, start: float) -> Lock:
    for _ in range(10):
      if self._create(self._record(start)):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(start,), daemon=True, name="workdir-lock")
        self._thread.start()
        return self
      holder = self._read()
      if holder is None:
        continue  # released in between
      who = (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} "
             f"since {holder.get('start', '?')}")
      reason = self._dead(holder)
      if reason is None:
        raise ValueError(f"{self.workdir} is in use by {who}; wait for it to end or stop it (a killed "
                         f"process's lock is taken over: on its host at once, elsewhere after "
                         f"{self.stale_s:.0f} s)")
      if self._remove(holder):
        self.log(f"{self.workdir} was locked by {who}, and {reason}: taking the lock over")
    raise ValueError(f"{self.workdir}: could not take {self.file} (other processes keep taking it)")

  def _beat(self, start: float):
    while not self._stop.wait(self.heartbeat_s):
      try:
        if (self._read() or {}).get("token") != self.token:
          self.log(f"{self.file} is no longer this process's: another process took the workdir over")
          return
        write_text(self.file, json.dumps(self._record(start)))
      # Any backend's storage error: the next beat tries again (a dead heartbeat would let others take over).
      except Exception as e:  # pylint: disable=broad-except
        self.log(f"could not refresh {self.file} ({e})")

  def release(self):
    """Stops the heartbeat and removes the lock if it is still ours."""
    if self._thread is None:
      return
    self._stop.set()
    self._thread.join()
    self._thread = None
    if (self._read() or {}).get("token") == self.token:
      self.file.unlink(missing_ok=True)
