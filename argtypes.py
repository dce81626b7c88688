"""What every command line shares: argparse types, the warning for flags that have no effect, and `run_main`.

Not a library module: no package imports it. Every command line ends the same way (`run_main`):

    0    done
    1    a handled error: one line `<prog>: error: <message>` on stderr
    2    a usage error (argparse)
    130  interrupted (Ctrl-C): one line `<prog>: interrupted; <what is kept and how to go on>`
"""

import argparse
import errno
import re
import sys

from student.config import positive_int as _positive_int  # no TensorFlow

# The errors a command reports as one line (their messages say what to fix); any other is a bug and keeps its
# traceback. OSError (a full disk, a permission) gets the file, the reason and the fix.
HANDLED = (FileNotFoundError, FileExistsError, ValueError)


def arg_type(check, name=None):
    """An argparse type from a check that converts a value or raises ValueError (its message becomes argparse's)."""
    def convert(text):
        try:
            return check(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = name or check.__name__  # argparse names the type in some messages
    return convert


positive_int = arg_type(_positive_int)  # an integer >= 1


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """`--help` that shows each option's default, except where it says nothing (None, an empty list, a flag's
    False) or the help already says what happens without the option (argparse's own formatter adds
    "(default: None)" to both)."""

    def _get_help_string(self, action):
        if action.default is False or action.default in (None, [], ()) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def fail(prog, error):
    """Print `<prog>: error: <message>` as one line on stderr; returns 1, the exit code of every handled error."""
    print(f"{prog}: error: {' '.join(str(error).split())}", file=sys.stderr)
    return 1


def warn(prog, message):
    print(f"{prog}: warning: {message}", file=sys.stderr)


def changed_flags(parser, args, dests):
    """The flags (as typed, e.g. `--lr`) of the destinations in `dests` whose values differ from their defaults."""
    flags = {action.dest: action.option_strings[0] for action in parser._actions if action.option_strings}
    return [flags.get(dest, "--" + dest.replace("_", "-")) for dest in dests
            if getattr(args, dest) != parser.get_default(dest)]


def warn_ignored(parser, args, dests, condition, outcome="ignored"):
    """Warn, once on stderr, about the flags of `dests` that were given but have no effect here: "`--x` only
    applies `condition`; `outcome`".

    Returns the flags warned about.
    """
    flags = changed_flags(parser, args, dests)
    if flags:
        verb = "applies" if len(flags) == 1 else "apply"
        warn(parser.prog, f"{', '.join(flags)} only {verb} {condition}; {outcome}")
    return flags


def attach_negative_values(argv, flags):
    """`--flag -1:2` as `--flag=-1:2` for the `flags` whose values may start with a minus sign.

    argparse reads `-1:2` as an option (and says only "expected one argument"); attached, the value reaches the
    flag's type, whose message says what is wrong with it.
    """
    argv = list(argv)
    out = []
    i = 0
    while i < len(argv):
        if argv[i] in flags and i + 1 < len(argv) and re.match(r"-[\d.]", argv[i + 1]):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out


def _fix(error):
    code = getattr(error, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT):
        return "free space"
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "fix the permissions"
    return "free space or fix the permissions"


def run_main(main, argv=None, *, prog, handled=(), kept="", again="run the same command again"):
    """Run `main(argv)` (which returns an exit code) and end as every command line does (see the module's table).

    Args:
        main: the command's work, from parsing its arguments on; argparse's SystemExit (usage errors, --help)
            passes through.
        argv: the arguments (default: sys.argv[1:]).
        prog: the command's name in its messages ("train.py").
        handled: more exception types reported as one line (besides `HANDLED`).
        kept: what an interruption or a disk error leaves intact ("finished epochs are kept"), if anything.
        again: how to go on after an interruption or a disk error.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    note = f"{kept}; " if kept else ""
    try:
        return main(argv)
    except (*HANDLED, *handled) as e:
        return fail(prog, e)
    except OSError as e:
        if e.strerror is None:  # raised with a message of ours, which says what to do
            return fail(prog, e)
        where = f"{e.filename}: " if e.filename else ""
        said = f" {kept[0].upper()}{kept[1:]}:" if kept else ""
        return fail(prog, f"{where}{e.strerror}.{said} {_fix(e)}, then {again}")
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; {note}{again}", file=sys.stderr)
        return 130
