#!/usr/bin/env python3
"""A stand-in for the Android SDK's `adb` client, with one fake phone behind it (stdlib only).

There is no phone and no adbd on the machines the tests run on: this script answers the adb
commands the adb runner (`bfnas.bench.runners.adb`) uses, as the real client does where it
matters: the same exit status (1 when adb fails) and adb's own error lines, checked against
Debian's adb 29.0.6 on this machine (`adb -s NOPE shell true` prints
"error: device 'NOPE' not found" on stderr; a push prints
"adb: error: failed to get feature set: ..." on stdout) and against adb's source
(transport.cpp: "device unauthorized.", "device offline"; file_sync_client.cpp: a push cut off
is "failed to copy 'L' to 'R': no response: ...").

    adb devices -l
    adb -s SERIAL shell COMMAND      COMMAND runs in /bin/sh on the host, in the phone's folders
    adb -s SERIAL push LOCAL REMOTE
    adb version | start-server | kill-server

The phone is a folder, `FAKE_ADB_ROOT` (`configure` writes it):

    phone.json         its serial, state and properties, and the calls that fail (below)
    data_local_tmp/    the phone's /data/local/tmp: paths under /data/local/tmp in a shell
                       command or a push are rewritten to this folder
    bin/               what the phone's PATH holds: getprop and taskset (toybox's syntax)
                       written here, and links to the host's sh tools the runner uses (so a
                       phone without taskset or sha256sum can be made)
    cpuinfo, status    what /proc/cpuinfo and /proc/self/status read on the phone
    calls.jsonl        every invocation that reached the phone, numbered from 1

phone.json's `drop_calls` and `offline_calls` list call numbers that fail as a dropped
connection ("error: closed"; a push writes half the file first) or an offline phone; `state`
is "device", "unauthorized" or "offline"; `attached: false` leaves the serial unlisted.
`install_harness` puts a fake `onnxruntime_perf_test` on the phone: it checks the argv it gets
and prints a recorded output (tests/data/perf_test/), which no phone produced.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

DEVICE_TMP = "/data/local/tmp"
# Host tools linked into the phone's PATH: a phone's toybox has these.
TOOLS = (
    "cat",
    "cut",
    "grep",
    "head",
    "ls",
    "mkdir",
    "mv",
    "pkill",
    "rm",
    "sh",
    "sha256sum",
    "sleep",
    "touch",
    "tr",
    "wc",
)
UNAUTHORIZED = (
    "device unauthorized.\n"
    "This adb server's $ADB_VENDOR_KEYS is not set\n"
    "Try 'adb kill-server' if that seems wrong.\n"
    "Otherwise check for a confirmation dialog on your device."
)

GETPROP = """#!{python}
import json, sys
props = json.load(open({config!r}))["props"]
if len(sys.argv) > 1:
    print(props.get(sys.argv[1], ""))
else:
    for k, v in sorted(props.items()):
        print(f"[{{k}}]: [{{v}}]")
"""

# toybox taskset: `taskset MASK COMMAND...`, the mask hex digits only ("bad mask" otherwise).
TASKSET = """#!{python}
import json, os, sys
log = {log!r}
if len(sys.argv) < 3:
    sys.stderr.write("taskset: Needs 2 args\\n"); sys.exit(1)
mask = sys.argv[1]
if not mask or any(c not in "0123456789abcdefABCDEF" for c in mask):
    sys.stderr.write(f"taskset: bad mask '{{mask}}'\\n"); sys.exit(1)
with open(log, "a") as f:
    f.write(json.dumps({{"mask": mask, "argv": sys.argv[2:]}}) + "\\n")
os.execv(sys.argv[2], sys.argv[2:])
"""

HARNESS = """#!{python}
# A fake onnxruntime_perf_test (tests/devices/fake_adb.py): checks its argv, prints a recorded
# output. Not ONNX Runtime: it never opens the model beyond checking the file is there.
import json, os, signal, sys, time
config = json.load(open({config!r}))
with open(config["log"], "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
VALUE = set("mrtxyefFoScpiCTRudb")
FLAGS = set("IsvMAPzDZnlqgX")
args, flags, positional = sys.argv[1:], {{}}, []
i = 0
while i < len(args):
    a = args[i]
    if a in ("-h", "--help"):
        print("onnxruntime_perf_test [options...] model_path [result_file]")
        sys.exit(1)
    if a.startswith("-") and len(a) > 1:
        name, eq, value = a.lstrip("-").partition("=")
        if name in VALUE:
            if not eq:
                i += 1
                value = args[i] if i < len(args) else ""
            flags.setdefault("-" + name, []).append(value)
        elif name in FLAGS:
            flags.setdefault("-" + name, []).append(True)
        else:
            sys.stderr.write(f"ERROR: Unknown command line flag '{{name}}'\\n")
            sys.stderr.write("See 'onnxruntime_perf_test --help'.")
            sys.exit(255)
    else:
        positional.append(a)
    i += 1
if len(positional) not in (1, 2):
    sys.stderr.write("See 'onnxruntime_perf_test --help'.")
    sys.exit(255)
for flag, want in config.get("expect", {{}}).items():
    got = flags.get(flag)
    want = want if isinstance(want, list) else [want]
    if got != want:
        print(f"fake onnxruntime_perf_test: expected {{flag}} {{want}}, got {{got}}")
        sys.exit(3)
if not os.path.isfile(positional[0]):
    print(f"fake onnxruntime_perf_test: no model file at {{positional[0]}}")
    sys.exit(255)
time.sleep(config.get("sleep_s", 0))
text = open(config["output"]).read()
(sys.stderr if config.get("stderr") else sys.stdout).write(text)
if len(positional) == 2 and config.get("per_run"):
    with open(positional[1], "a") as f:
        f.write(open(config["per_run"]).read())
sys.stdout.flush()
sys.stderr.flush()
if config.get("signal"):
    os.kill(os.getpid(), getattr(signal, config["signal"]))
sys.exit(config.get("exit_code", 0))
"""


# -- the fake phone, as tests set it up ----------------------------------------------------------
def configure(
    root: Path,
    serial: str = "FAKE0001",
    *,
    state: str = "device",
    attached: bool = True,
    others: tuple[tuple[str, str], ...] = (),
    props: dict | None = None,
    drop_calls: tuple[int, ...] = (),
    offline_calls: tuple[int, ...] = (),
    cpuinfo: str | None = None,
    cpus_allowed: str | None = None,
    missing_tools: tuple[str, ...] = ("taskset",),
) -> Path:
    """Write (or rewrite) the fake phone in `root`; returns `root`. `missing_tools` are left
    out of the phone's PATH (`taskset` by default: pass () to give it one)."""
    root = Path(root)
    (root / "data_local_tmp").mkdir(parents=True, exist_ok=True)
    bin_dir = root / "bin"
    if bin_dir.exists():
        shutil.rmtree(bin_dir)
    bin_dir.mkdir()
    config = {
        "serial": serial,
        "state": state,
        "attached": attached,
        "others": [list(o) for o in others],
        "props": {
            "ro.product.model": "Fake Phone",
            "ro.product.manufacturer": "bfnas tests",
            "ro.build.version.release": "14",
            "ro.build.version.sdk": "34",
            "ro.soc.model": "FAKE-SOC",
            "ro.board.platform": "fakeboard",
            "ro.product.cpu.abi": "arm64-v8a",
            **(props or {}),
        },
        "drop_calls": list(drop_calls),
        "offline_calls": list(offline_calls),
    }
    (root / "phone.json").write_text(json.dumps(config, indent=1))
    python = sys.executable
    _script(bin_dir / "getprop", GETPROP.format(python=python, config=str(root / "phone.json")))
    if "taskset" not in missing_tools:
        _script(bin_dir / "taskset", TASKSET.format(python=python, log=str(root / "taskset.jsonl")))
    for tool in TOOLS:
        host = shutil.which(tool)
        if host and tool not in missing_tools:
            (bin_dir / tool).symlink_to(host)
    for name, text in (("cpuinfo", cpuinfo), ("status", cpus_allowed)):
        path = root / name
        path.unlink(missing_ok=True)
        if text is not None:
            path.write_text(text if name == "cpuinfo" else f"Cpus_allowed_list:\t{text}\n")
    return root


def install_harness(
    root: Path,
    output: Path,
    *,
    per_run: Path | None = None,
    exit_code: int = 0,
    kill_signal: str | None = None,
    to_stderr: bool = False,
    expect: dict | None = None,
    sleep_s: float = 0.0,
    device_path: str = f"{DEVICE_TMP}/onnxruntime_perf_test",
) -> Path:
    """Put a fake onnxruntime_perf_test at `device_path` on the phone in `root`: it checks
    its flags against `expect` (flag -> value, or list of values for a repeated flag), prints
    `output` (a recorded file), appends `per_run` to its result file, then exits `exit_code`
    or kills itself with `kill_signal`. Returns its path on the host."""
    root = Path(root)
    config_path = root / "harness.json"
    config = {
        "output": str(output),
        "per_run": str(per_run) if per_run else None,
        "exit_code": exit_code,
        "signal": kill_signal,
        "stderr": to_stderr,
        "expect": expect or {},
        "sleep_s": sleep_s,
        "log": str(root / "harness_calls.jsonl"),
    }
    config_path.write_text(json.dumps(config, indent=1))
    path = host_path(root, device_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _script(path, HARNESS.format(python=sys.executable, config=str(config_path)))
    return path


def host_path(root: Path, device_path: str) -> Path:
    """Where a path under the phone's /data/local/tmp lies on the host."""
    if device_path != DEVICE_TMP and not device_path.startswith(DEVICE_TMP + "/"):
        raise ValueError(f"the fake phone keeps files under {DEVICE_TMP} only: {device_path}")
    return Path(str(root / "data_local_tmp") + device_path[len(DEVICE_TMP) :])


def calls(root: Path) -> list[dict]:
    """Every adb invocation that reached the phone, in order."""
    return _jsonl(Path(root) / "calls.jsonl")


def harness_calls(root: Path) -> list[list[str]]:
    """The argv (without the program) of every run of the fake harness."""
    return _jsonl(Path(root) / "harness_calls.jsonl")


def taskset_calls(root: Path) -> list[dict]:
    return _jsonl(Path(root) / "taskset.jsonl")


def _jsonl(path: Path) -> list:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _script(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


# -- the client ----------------------------------------------------------------------------------
def main(argv: list[str]) -> int:
    root = os.environ.get("FAKE_ADB_ROOT")
    if not root or not (Path(root) / "phone.json").exists():
        sys.stderr.write("fake adb: FAKE_ADB_ROOT names no fake phone (fake_adb.configure)\n")
        return 1
    root_path = Path(root)
    phone = json.loads((root_path / "phone.json").read_text())
    serial = os.environ.get("ANDROID_SERIAL")
    args = list(argv)
    while args and args[0].startswith("-"):
        option = args.pop(0)
        if option == "-s" and args:
            serial = args.pop(0)
        elif option in ("-d", "-e"):
            continue
        else:
            sys.stderr.write(f"adb: unknown option {option}\n")
            return 1
    if not args:
        sys.stderr.write("adb: no command given\n")
        return 1
    command, rest = args[0], args[1:]
    if command == "version":
        print("Android Debug Bridge version 1.0.41")
        print("Version 29.0.6-fake (tests/devices/fake_adb.py)")
        print(f"Installed as {os.path.abspath(__file__)}")
        return 0
    if command in ("start-server", "kill-server"):
        return 0
    listed = _listed(phone)
    if command == "devices":
        print("List of devices attached")
        for number, (name, state) in enumerate(listed, start=1):
            facts = (
                f"product:fake model:{phone['props']['ro.product.model'].replace(' ', '_')} "
                f"device:fake transport_id:{number}"
                if state == "device"
                else f"usb:1-{number} transport_id:{number}"
            )
            print(f"{name:<22} {state} {facts}" if "-l" in rest else f"{name}\t{state}")
        print()
        return 0
    if command not in ("shell", "push", "get-state"):
        sys.stderr.write(f"adb: unknown command {command}\n")
        return 1

    # Which phone, as adb's server picks it (transport.cpp acquire_one_transport).
    error = _pick(serial, listed)
    if error is not None:
        return _fail(command, error)
    number = len(calls(root_path)) + 1
    with (root_path / "calls.jsonl").open("a") as log:
        log.write(json.dumps({"n": number, "argv": argv}) + "\n")
    if number in phone["offline_calls"]:
        return _fail(command, "device offline")
    dropped = number in phone["drop_calls"]
    if command == "get-state":
        print("device")
        return 0
    if command == "push":
        return _push(root_path, rest, dropped)
    if dropped:
        sys.stderr.write("error: closed\n")
        return 1
    return _shell(root_path, " ".join(rest))


def _listed(phone: dict) -> list[tuple[str, str]]:
    mine = [(phone["serial"], phone["state"])] if phone["attached"] else []
    return mine + [tuple(o) for o in phone["others"]]


def _pick(serial: str | None, listed: list[tuple[str, str]]) -> str | None:
    """adb's error for the phone the command names, or None when it can be used."""
    if serial is None:
        if not listed:
            return "no devices/emulators found"
        if len(listed) > 1:
            return "more than one device/emulator"
        serial = listed[0][0]
    state = dict(listed).get(serial)
    if state is None:
        return f"device '{serial}' not found"
    if state == "unauthorized":
        return UNAUTHORIZED
    if state == "offline":
        return "device offline"
    return None


def _fail(command: str, error: str) -> int:
    # Debian's adb 29.0.6: a push reports the failed feature query on stdout, the rest on stderr.
    if command == "push":
        sys.stdout.write(f"adb: error: failed to get feature set: {error}\n")
    else:
        sys.stderr.write(f"error: {error}\n")
    return 1


def _map(root: Path, text: str) -> str:
    """`text` with the phone's paths rewritten to the folders standing for them."""
    text = text.replace(DEVICE_TMP, str(root / "data_local_tmp"))
    for device, name in (("/proc/cpuinfo", "cpuinfo"), ("/proc/self/status", "status")):
        if (root / name).exists():
            text = text.replace(device, str(root / name))
    return text


def _shell(root: Path, command: str) -> int:
    if not command.strip():
        sys.stderr.write("fake adb: an interactive shell is not emulated\n")
        return 1
    env = {
        "PATH": str(root / "bin"),
        "HOME": str(root / "data_local_tmp"),
        "TMPDIR": str(root / "data_local_tmp"),
        "LANG": "C",
    }
    proc = subprocess.run(
        ["/bin/sh", "-c", _map(root, command)],
        cwd=root,
        env=env,
        stdin=sys.stdin.buffer if not sys.stdin.isatty() else subprocess.DEVNULL,
        capture_output=True,
    )
    sys.stdout.buffer.write(proc.stdout)
    sys.stderr.buffer.write(proc.stderr)
    # adb's shell protocol (Android 7+) returns the command's exit status.
    return proc.returncode if proc.returncode >= 0 else 128 - proc.returncode


def _push(root: Path, rest: list[str], dropped: bool) -> int:
    paths = [a for a in rest if not a.startswith("-")]
    if len(paths) != 2:
        sys.stderr.write("adb: push requires LOCAL... REMOTE (the fake takes one LOCAL)\n")
        return 1
    local, remote = paths
    try:
        data = Path(local).read_bytes()
    except OSError as exc:
        sys.stdout.write(f"adb: error: cannot stat '{local}': {exc.strerror}\n")
        return 1
    try:
        target = host_path(root, remote)
    except ValueError as exc:
        sys.stdout.write(f"adb: error: failed to copy '{local}' to '{remote}': remote {exc}\n")
        return 1
    target.parent.mkdir(parents=True, exist_ok=True)  # adbd makes the folders (secure_mkdirs)
    if dropped:
        target.write_bytes(data[: len(data) // 2])
        sys.stdout.write(
            f"adb: error: failed to copy '{local}' to '{remote}': no response: "
            "Connection reset by peer\n"
        )
        return 1
    target.write_bytes(data)
    print(f"{local}: 1 file pushed, 0 skipped. 41.3 MB/s ({len(data)} bytes in 0.001s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
