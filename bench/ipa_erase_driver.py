#!/usr/bin/env python3
"""Runs IPA's own overwrite erase (GenericHardwareManager._shred_block_device) on one
LOOP DEVICE, for bench/erase.sh.

usage: ipa_erase_driver.py /dev/loopN [ITERATIONS [ZEROIZE]]

ITERATIONS and ZEROIZE (1/0) go in as driver_internal_info
(agent_erase_devices_iterations, agent_erase_devices_zeroize); IPA's defaults are 1 and
true. IPA then runs `shred --force --zero --verbose --iterations 1 DEVICE`.

Safety:
  * DEVICE must be /dev/loopN backed by a regular file under one of the directories in
    $IPA_BENCH_SAFE_ROOTS (colon-separated; default /var/tmp/ira-bench/).
  * hardware manager discovery and dispatch are replaced by functions that raise, and
    the manager's initialize() is never called, so no disk is listed or probed.
  * every command IPA runs (utils.execute / processutils.execute) is checked: any /dev/
    argument other than DEVICE aborts the run.
Prints one JSON line: seconds (the IPA method, as IPA calls it), fsync_s (an fsync of the
device afterwards; shred syncs each pass itself), bytes, maxrss_kib of this process and of
its children (shred), commands.
"""
import json
import os
import re
import resource
import sys
import time

SAFE_ROOTS = os.environ.get("IPA_BENCH_SAFE_ROOTS", "/var/tmp/ira-bench/").split(":")


def check_device(dev):
    m = re.fullmatch(r"/dev/(loop\d+)", dev)
    if not m:
        sys.exit(f"refusing: {dev} is not /dev/loopN")
    with open(f"/sys/block/{m.group(1)}/loop/backing_file") as f:
        back = f.read().strip()
    if not os.path.isfile(back):
        sys.exit(f"refusing: {dev} is backed by {back}, not a regular file")
    real = os.path.realpath(back)
    if not any(r and real.startswith(os.path.join(os.path.realpath(r), ""))
               for r in SAFE_ROOTS):
        sys.exit(f"refusing: {dev} is backed by {back}, not under {SAFE_ROOTS}")


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    dev = sys.argv[1]
    iterations = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    zeroize = (sys.argv[3] != "0") if len(sys.argv) > 3 else True
    check_device(dev)

    from oslo_config import cfg
    from ironic_python_agent import config as ipa_config  # noqa: F401 registers opts
    from ironic_python_agent import hardware, utils
    from oslo_concurrency import processutils

    cfg.CONF(args=[], project="ipa-baseline", default_config_files=[])

    def forbidden(*a, **k):
        raise RuntimeError("hardware manager access is forbidden in this benchmark")
    for name in ("dispatch_to_managers", "dispatch_to_all_managers",
                 "get_managers", "list_all_block_devices"):
        if hasattr(hardware, name):
            setattr(hardware, name, forbidden)

    ran = []

    def guard(real, record):
        def execute(*cmd, **kw):
            for arg in cmd:
                if isinstance(arg, str) and "/dev/" in arg and arg != dev:
                    raise RuntimeError(f"refusing command touching {arg}: {cmd}")
            if record:
                ran.append(" ".join(map(str, cmd)))
            return real(*cmd, **kw)
        return execute
    # utils.execute calls processutils.execute: both check, the inner one records.
    utils.execute = guard(utils.execute, False)
    hardware.utils.execute = utils.execute
    processutils.execute = guard(processutils.execute, True)

    size = int(os.popen(f"blockdev --getsize64 {dev}").read() or 0)
    node = {"driver_internal_info": {"agent_erase_devices_iterations": iterations,
                                     "agent_erase_devices_zeroize": zeroize}}
    manager = hardware.GenericHardwareManager()
    device = hardware.BlockDevice(dev, "loop", size, False)
    t0 = time.monotonic()
    ok = manager._shred_block_device(node, device)
    t1 = time.monotonic()
    fd = os.open(dev, os.O_WRONLY)
    os.fsync(fd)
    os.close(fd)
    t2 = time.monotonic()
    if not ok:
        sys.exit(f"IPA's _shred_block_device failed on {dev}: {ran}")
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    passes = iterations + (1 if zeroize else 0)
    print(json.dumps({
        "seconds": round(t1 - t0, 3), "fsync_s": round(t2 - t1, 3),
        "bytes": size * passes, "maxrss_kib": me.ru_maxrss,
        "children_maxrss_kib": kids.ru_maxrss, "commands": ran}))


if __name__ == "__main__":
    main()
