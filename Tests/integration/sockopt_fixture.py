"""Cuts a sockopt_probe.py output down to the fixture SocketOptionReplayTests replays
(Tests/ZTServiceTests/Fixtures/): the reads, the sets of a few telling values, the string values,
and two values set before connect/bind/listen; none of the answers that depend on the machine.

    sockopt_fixture.py PROBE_OUTPUT.json FIXTURE.json
"""
import json
import sys

KEEP = {"i0", "i1", "i-1", "i255", "i65535", "b1", "p1,5", "z16"}
PRE = {"i1", "i1000"}
DROP = {("TCP", "11"), ("SOL", "55"), ("TCP", "26")}   # tcp_info, meminfo, CC info: machine-made


def cut(src, dst):
    with open(src) as f:
        d = json.load(f)
    out = {"_meta": d["_meta"]}
    for k, v in d.items():
        if k.startswith("_"):
            continue
        p = k.split("|")
        kind, step = p[0], p[3]
        if (p[1], p[2]) in DROP or step.endswith("socket") or p[-1] == "socket":
            continue
        if kind == "accepted" and step != "get512":
            continue
        if step in ("get512", "get1"):
            out[k] = v
        elif step.startswith("set:"):
            tag = step[4:]
            pre = kind.endswith("-pre") or kind == "inherit"
            if (not pre and (tag in KEEP or tag.startswith("s"))) or (pre and (tag in PRE or tag.startswith("s"))):
                out[k] = v
    out["_meta"]["cases"] = len(out) - 1
    out["_meta"]["note"] = "cut from a sockopt_probe.py run on Linux 6.18 by sockopt_fixture.py"
    with open(dst, "w") as f:
        json.dump(out, f, indent=0, sort_keys=True, separators=(",", ":"))
    print(dst, len(out) - 1)


if __name__ == "__main__":
    cut(sys.argv[1], sys.argv[2])
