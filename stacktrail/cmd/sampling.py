"""``stacktrail sampling show|set``: read and change the sampling policy.

Where the policy lives: ``--file``, ``--store`` or the agent's own config
file (``--agent-config``: its ``sampling_policy_file`` or
``sampling_policy_store``).  ``set`` changes only what its options name,
validates the result before writing it, and records who (the invoking
user, or the one behind sudo) and when.
"""

import json
import os
import sys

from stacktrail.common import policy as policy_mod


class SamplingError(Exception):
    """A usage problem, said in one line."""


def add_arguments(commands, func):
    sampling = commands.add_parser(
        "sampling", help="show or change the central sampling policy")
    actions = sampling.add_subparsers(dest="sampling_command",
                                      metavar="{show,set}")
    actions.required = True
    show = actions.add_parser("show", help="print the policy and its "
                                           "recent changes")
    show.add_argument("--history", type=int, default=5, metavar="N",
                      help="recent changes to list (default 5)")
    change = actions.add_parser(
        "set", help="change the policy (only what the options name)")
    change.add_argument("--from-json", metavar="FILE",
                        help="start from this policy (JSON; - for stdin) "
                             "instead of the current one")
    change.add_argument("--default-rate", type=float, metavar="R",
                        help="share of requests traced when no rule names "
                             "them (0 to 1)")
    change.add_argument("--rate", action="append", default=[],
                        metavar="KIND:NAME=R",
                        help="rate for one project, service or operation, "
                             "e.g. service:nova-api=0.1; R 'none' removes "
                             "the rule (repeatable)")
    change.add_argument("--max-traces-per-second", type=float, metavar="N",
                        help="cap on sampled traces a second per service "
                             "process (0: no cap)")
    change.add_argument("--keep-path", action="append", default=None,
                        metavar="GLOB",
                        help="always keep requests to these paths "
                             "(repeatable; replaces the list; '' clears)")
    change.add_argument("--keep-operation", action="append", default=None,
                        metavar="GLOB",
                        help="always keep traces with these operations "
                             "(repeatable; replaces the list; '' clears)")
    change.add_argument("--slow-ms", action="append", default=[],
                        metavar="OPERATION=MS",
                        help="tail sampling: keep traces slower than MS; "
                             "OPERATION 'default' for all others; MS 'none' "
                             "removes the rule (repeatable)")
    for parser in (show, change):
        where = parser.add_mutually_exclusive_group()
        where.add_argument("--file", metavar="PATH",
                           help="the policy file the agents watch")
        where.add_argument("--store", metavar="URL",
                           help="the redis:// store the agents read")
        where.add_argument("--agent-config", action="append",
                           metavar="FILE",
                           help="find it in this agent config file")
    sampling.set_defaults(func=func)


def open_store(args):
    # the agent's modules only when asked for: not for every CLI command
    from stacktrail.agent import opts as agent_opts
    from stacktrail.agent import policy as agent_policy
    try:
        if args.file or args.store:
            store = agent_policy.store_for(args.file or "", args.store or "")
        else:
            conf = agent_opts.make_conf([], cli=False,
                                        config_files=args.agent_config)
            store = agent_policy.store_for(
                conf.agent.sampling_policy_file,
                conf.agent.sampling_policy_store)
    except ValueError as exc:
        raise SamplingError(str(exc)) from None
    if store is None:
        raise SamplingError("no policy location: give --file, --store or an "
                            "--agent-config with sampling_policy_file or "
                            "sampling_policy_store")
    return store


def current(store):
    text = store.read()
    return policy_mod.loads(text) if text is not None else \
        policy_mod.Policy()


def _pair(text, what):
    name, sep, value = text.rpartition("=")
    if not sep or not name:
        raise SamplingError("%s must look like NAME=VALUE, got %r"
                            % (what, text))
    return name, None if value == "none" else _number(value, what)


def _number(text, what):
    try:
        return float(text)
    except ValueError:
        raise SamplingError("%s: %r is not a number" % (what, text)) from None


def edited(data, args):
    """The policy document ``data`` with the changes ``args`` ask for."""
    if args.default_rate is not None:
        data["default_rate"] = args.default_rate
    if args.max_traces_per_second is not None:
        data["max_traces_per_second"] = args.max_traces_per_second
    for text in args.rate:
        target, value = _pair(text, "--rate")
        kind, sep, name = target.partition(":")
        if not sep or kind not in policy_mod.KINDS:
            raise SamplingError("--rate needs KIND:NAME=R with KIND one of "
                                "%s, got %r"
                                % (", ".join(policy_mod.KINDS), text))
        table = data.setdefault("rates", {}).setdefault(kind, {})
        _put(table, name, value)
    for text in args.slow_ms:
        operation, value = _pair(text, "--slow-ms")
        _put(data.setdefault("slow_ms", {}), operation, value)
    for key, values in (("paths", args.keep_path),
                        ("operations", args.keep_operation)):
        if values is not None:
            data.setdefault("always_keep", {})[key] = [v for v in values
                                                       if v]
    return data


def _put(table, name, value):
    if value is None:
        table.pop(name, None)
    else:
        table[name] = value


def _base(args, store):
    if args.from_json is None:
        return current(store).to_dict()
    try:
        if args.from_json == "-":
            return json.load(sys.stdin)
        with open(args.from_json) as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise SamplingError("cannot read %s: %s"
                            % (args.from_json, exc)) from None


def run(args):
    store = open_store(args)
    try:
        if args.sampling_command == "show":
            result = {"where": store.where,
                      "policy": current(store).to_dict(),
                      "changes": store.history(max(args.history, 0))}
        else:
            policy = policy_mod.parse(edited(_base(args, store), args))
            from stacktrail.agent import policy as agent_policy
            user = os.environ.get("SUDO_USER") or None
            agent_policy.change(store, policy, user=user)
            result = {"where": store.where, "policy": policy.to_dict()}
    except policy_mod.PolicyError as exc:
        raise SamplingError("invalid policy: %s" % exc) from None
    finally:
        store.close()
    json.dump(result, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0
