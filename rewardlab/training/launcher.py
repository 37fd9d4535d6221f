"""Processes started by a launcher (``accelerate launch``, ``torchrun``) die with it.

A launcher killed with SIGKILL cannot pass the signal on, and its ranks would live on as orphans holding memory and
a half-finished process group. Linux can tie a child to its parent (``prctl(PR_SET_PDEATHSIG)``); neither torch's
elastic agent nor Accelerate asks for it, so each rank asks for itself, as early as it can.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_launcher() -> None:
    """Under torch's elastic launcher (which ``accelerate launch`` runs), ask the kernel to SIGKILL this process when
    the launcher dies; exit at once if it has died already. Elsewhere, nothing."""
    if "TORCHELASTIC_RUN_ID" not in os.environ or not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the launcher died before the request: this process was handed to init
        os._exit(1)
