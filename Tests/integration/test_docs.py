"""Man pages and shell completions (issue 13): they render cleanly, cover the CLI, and complete.

No daemon, no namespace: these run as any user.
"""
import os
import re
import shutil
import subprocess

import pytest

from conftest import BIN, REPO, run

MAN = os.path.join(REPO, "docs", "man")
PAGES = ["ztapd.8", "ztctl.8", "ztapd.conf.5"]
ZTCTL = os.path.join(BIN, "ztctl")
ZTAPD = os.path.join(BIN, "ztapd")


def render(page, width=200):
    env = {**os.environ, "MANWIDTH": str(width), "LC_ALL": "C.UTF-8"}
    r = run(["man", "--nh", "--nj", "-l", os.path.join(MAN, page)], env=env)
    return r.stdout


@pytest.mark.parametrize("page", PAGES)
def test_man_page_renders_without_warnings(page):
    if not shutil.which("man"):
        pytest.skip("man-db not installed (scripts/install-deps.sh installs it)")
    # The check lintian runs on every man page of a package.
    env = {**os.environ, "LC_ALL": "C.UTF-8", "MANROFFSEQ": "", "MANWIDTH": "80"}
    r = subprocess.run(["man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z", os.path.join(MAN, page)],
                       capture_output=True, env=env)
    assert r.returncode == 0 and r.stderr == b"", r.stderr.decode()
    text = render(page)
    assert "NAME" in text and "SEE ALSO" in text


def subcommands():
    out = run([ZTCTL, "--help"]).stdout
    part = out.split("SUBCOMMANDS:")[1]
    return [m.group(1) for m in re.finditer(r"^  (\w[\w-]*)\s", part, re.M) if m.group(1) != "See"]


def long_options(argv):
    out = run(argv).stdout
    return sorted(set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]+)", out)) - {"--help", "--version"})


def test_ztctl_man_page_covers_every_command_and_option():
    if not shutil.which("man"):
        pytest.skip("man-db not installed")
    text = render("ztctl.8")
    cmds = subcommands()
    assert {"status", "list", "join", "capture", "metrics", "connections", "run"} <= set(cmds), cmds
    for c in cmds:
        assert re.search(rf"^\s+{c}\b", text, re.M), f"ztctl(8) has no entry for {c}"
        for opt in long_options([ZTCTL, c, "--help"]):
            assert opt in text, f"ztctl(8) does not mention {c} {opt}"
    for opt in long_options([ZTCTL, "--help"]):
        assert opt in text, opt


def test_ztapd_man_page_covers_every_option():
    if not shutil.which("man"):
        pytest.skip("man-db not installed")
    text = render("ztapd.8")
    for opt in long_options([ZTAPD, "--help"]):
        assert opt in text, opt


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_generate(shell):
    r = run([ZTCTL, "--generate-completion-script", shell])
    assert "capture" in r.stdout and "metrics" in r.stdout and "run-dir" in r.stdout


def test_bash_completion_completes_commands_and_options(tmp_path):
    if not shutil.which("bash"):
        pytest.skip("no bash")
    script = tmp_path / "ztctl.bash"
    script.write_text(run([ZTCTL, "--generate-completion-script", "bash"]).stdout)
    # The function the script registers, called as bash would on TAB.
    probe = f"""
source {script}
fn=$(complete -p ztctl | sed -E 's/.*-F ([^ ]+).*/\\1/')
COMP_WORDS=(ztctl cap); COMP_CWORD=1; COMP_LINE="ztctl cap"; COMP_POINT=${{#COMP_LINE}}
$fn ztctl cap ztctl; echo "1:${{COMPREPLY[*]}}"
COMP_WORDS=(ztctl capture lab --c); COMP_CWORD=3; COMP_LINE="ztctl capture lab --c"; COMP_POINT=${{#COMP_LINE}}
$fn ztctl --c lab; echo "2:${{COMPREPLY[*]}}"
"""
    r = run(["bash", "-c", probe], env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"})
    lines = dict(l.split(":", 1) for l in r.stdout.splitlines() if l[:2] in ("1:", "2:"))
    assert lines["1"].split() == ["capture"], r.stdout + r.stderr
    assert "--count" in lines["2"].split(), r.stdout + r.stderr
