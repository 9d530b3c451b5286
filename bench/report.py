#!/usr/bin/env python3
"""Parses benchmark outputs and writes the results sections of docs/benchmarks.md.

    report.py wrk FILE ROUND SCENARIO TARGET TICKS HZ     -> one TSV line
    report.py h2load FILE ROUND SCENARIO TARGET TICKS HZ  -> one TSV line (FILE.log: per request)
    report.py report WORKDIR DOCS PARAMS                   -> rewrites the blocks between the markers

Scenarios (a)-(c) and (f), the decision engine, propagation and memory go in the results
block; (d), (e) and (g) in the mesh block. A run rewrites only the blocks it measured.
"""
import json
import os
import platform
import re
import statistics
import subprocess
import sys

BEGIN = "<!-- results:begin -->"
END = "<!-- results:end -->"
MESH_BEGIN = "<!-- mesh-results:begin -->"
MESH_END = "<!-- mesh-results:end -->"
SCENARIOS = {
    "a": "(a) pass-through, one version",
    "b": "(b) 10 % canary, sticky by cookie",
    "c": "(c) six content rules + sticky split, mixed User-Agents",
    "d": "(d) pass-through, every request mirrored to v2",
    "e": "(e) gRPC unary calls over h2c, a metadata rule",
    "f": "(f) pass-through, 2 workers on 2 cores",
    "g": "(g) pass-through, HTTPS to the target (TLS 1.3, keep-alive)",
}


def to_ms(text):
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def parse_wrk(path):
    text = open(path).read()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    p50 = to_ms(re.search(r"\s50%\s+([\d.]+\w+)", text).group(1))
    p99 = to_ms(re.search(r"\s99%\s+([\d.]+\w+)", text).group(1))
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    failures = (int(bad.group(1)) if bad else 0) + (sum(map(int, errors.groups())) if errors else 0)
    return rps, p50, p99, failures


def parse_h2load(path):
    text = open(path).read()
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", text).group(1))
    m = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored, (\d+) timeout", text)
    done, failed, errored, timeout = int(m.group(1)), int(m.group(3)), int(m.group(4)), int(m.group(5))
    times = sorted(int(line.split("\t")[2]) for line in open(path + ".log") if line.count("\t") >= 2)
    quantile = lambda q: times[min(len(times) - 1, int(q * len(times)))] / 1000 if times else float("nan")
    return rps, quantile(0.5), quantile(0.99), failed + errored + timeout, done


def cmd(args):
    try:
        return subprocess.run(args, capture_output=True, text=True, check=False).stdout.strip() or \
            subprocess.run(args, capture_output=True, text=True, check=False).stderr.strip()
    except OSError:
        return "n/a"


def machine():
    cpu = "unknown CPU"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = next((l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal")), "0")
    return [
        f"- CPU: {cpu}, {os.cpu_count()} cores; memory {int(mem) // 1024 // 1024} GiB; "
        f"Linux {platform.release()}",
        f"- {cmd(['rustc', '--version'])}; {cmd(['nginx', '-v']).splitlines()[0]}; "
        f"{cmd(['wrk', '--version']).splitlines()[0].split(' [')[0]}",
    ]


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def preamble(params):
    out = [f"Run on {subprocess.run(['date', '-u', '+%Y-%m-%d %H:%M UTC'], capture_output=True, text=True).stdout.strip()}."]
    out.append("")
    out += machine()
    out.append(f"- `bench/run` with {params}; the target under test pinned to CPU 1 "
               "(one nginx worker, one Grayline worker thread, one upstream thread for the floor); "
               "`wrk -t1 -c$CONNECTIONS --latency` (gRPC: `h2load -c$((CONNECTIONS / STREAMS)) "
               "-m$STREAMS`), the upstreams and the server pinned to CPU 0. In (f) nothing is pinned: "
               "nginx with 2 workers and the Grayline proxy with 2 worker threads share both cores with "
               "`wrk -t2 -c$((2 * CONNECTIONS))` and an upstream of 2 threads, so a target's share of "
               "the machine is whatever it takes; CPU per request is the ratio that counts there.")
    out.append("")
    return out


def throughput(data, scenarios):
    """The throughput table, the rounds and the statistics overhead of `scenarios`."""
    if not scenarios:
        return []
    rounds = max(len(v["rps"]) for (s, _), v in data.items() if s in scenarios)
    out = []
    out.append(f"### Throughput and latency (medians of {rounds} interleaved runs)")
    out.append("")
    out.append("| scenario | target | req/s | p50 ms | p99 ms | CPU µs/req | req/s vs nginx | CPU/req vs nginx | failed |")
    out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for s in scenarios:
        base_n = median(data.get((s, "nginx"), {}).get("rps", []))
        base_cpu = median(data.get((s, "nginx"), {}).get("cpu", []))
        workers = "2 workers" if s == "f" else "1 worker"
        for t, label in [("upstream", "upstream directly"), ("nginx", f"nginx {workers}"),
                         ("grayline", f"Grayline proxy, {workers}"), ("grayline-nostats", "Grayline, stats off"),
                         ("grayline-base", "Grayline, baseline build"), ("nginx-4w", "nginx 4 workers"),
                         ("grayline-4w", "Grayline proxy, 4 workers")]:
            d = data.get((s, t))
            if not d:
                continue
            rps = median(d["rps"])
            cpu = median(d["cpu"])
            out.append(f"| {SCENARIOS[s]} | {label} | {rps:,.0f} | {median(d['p50']):.2f} | "
                       f"{median(d['p99']):.2f} | {cpu:.1f} | {rps / base_n:.2f} × | {cpu / base_cpu:.2f} × | "
                       f"{d['failures']} |")
    out.append("")
    out.append("All runs, req/s per round:")
    out.append("")
    out.append("```")
    for s in scenarios:
        for t in ["upstream", "nginx", "grayline", "grayline-nostats", "grayline-base", "nginx-4w",
                  "grayline-4w"]:
            d = data.get((s, t))
            if d:
                out.append(f"{s} {t:<17} " + "  ".join(f"{x:>9,.0f}" for x in d["rps"]))
    out.append("```")
    out.append("")
    out.append("### Statistics overhead")
    out.append("")
    out.append("Throughput is bounded by the loaded machine as much as by the proxy, and the machine "
               "drifts by ±10 % between rounds, so the cost is the median over rounds of the ratio "
               "between the two proxies measured back to back in the same round.")
    out.append("")
    for s in scenarios:
        a, b = data.get((s, "grayline")), data.get((s, "grayline-nostats"))
        if a and b:
            cost = (1 - median([x / y for x, y in zip(a["rps"], b["rps"])])) * 100
            cpu = (median([x / y for x, y in zip(a["cpu"], b["cpu"])]) - 1) * 100
            out.append(f"- {SCENARIOS[s]}: costs {cost:.1f} % of throughput and {cpu:+.1f} % CPU per request "
                       f"(medians {median(a['rps']):,.0f} vs {median(b['rps']):,.0f} req/s, "
                       f"{median(a['cpu']):.2f} vs {median(b['cpu']):.2f} µs).")
    out.append("")
    if any((s, "grayline-base") in data for s in scenarios):
        out.append("### Against the baseline build")
        out.append("")
        out.append("The same proxy configuration served by an earlier build (`BENCH_BASELINE`), measured in "
                   "the same rounds; the median over rounds of the ratio between the two, back to back.")
        out.append("")
        for s in scenarios:
            a, b = data.get((s, "grayline")), data.get((s, "grayline-base"))
            if a and b:
                rps = (median([x / y for x, y in zip(a["rps"], b["rps"])]) - 1) * 100
                cpu = (median([x / y for x, y in zip(a["cpu"], b["cpu"])]) - 1) * 100
                out.append(f"- {SCENARIOS[s]}: {rps:+.1f} % throughput and {cpu:+.1f} % CPU per request "
                           f"(medians {median(a['rps']):,.0f} vs {median(b['rps']):,.0f} req/s, "
                           f"{median(a['cpu']):.2f} vs {median(b['cpu']):.2f} µs).")
        out.append("")
    return out


def report(work, docs, params):
    rows = [l.split("\t") for l in open(os.path.join(work, "throughput.tsv")) if l.strip()]
    data = {}
    for _, scenario, target, rps, p50, p99, failures, cpu in rows:
        d = data.setdefault((scenario, target), {"rps": [], "p50": [], "p99": [], "cpu": [], "failures": 0})
        d["cpu"].append(float(cpu))
        d["rps"].append(float(rps))
        d["p50"].append(float(p50))
        d["p99"].append(float(p99))
        d["failures"] += int(failures)
    measured = {s for s, _ in data}
    text = open(docs).read() if os.path.exists(docs) else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if measured & set("deg"):
        mesh = preamble(params) + throughput(data, [s for s in "deg" if s in measured])
        agreed = os.path.join(work, "tls-params.txt")
        if "g" in measured and os.path.exists(agreed):
            mesh.append("What each target of (g) agreed with an OpenSSL client (`openssl s_client`, the "
                        "library wrk uses), with the one ECDSA P-256 certificate they all serve:")
            mesh.append("")
            mesh.append("```")
            mesh += [l.rstrip() for l in open(agreed) if l.strip()]
            mesh.append("```")
            mesh.append("")
        metrics = os.path.join(work, "mesh-metrics.txt")
        if os.path.exists(metrics):
            mesh.append("Counters of the two proxies after all runs (copies made and not made, gRPC errors):")
            mesh.append("")
            mesh.append("```")
            mesh += [l.rstrip() for l in open(metrics) if l.strip()]
            mesh.append("```")
            mesh.append("")
        text = replace_block(text, MESH_BEGIN, MESH_END, "\n".join(mesh))
    if not (measured & set("abcf")) and not any(f.startswith("propagation-") or f == "stats-memory.json"
                                                for f in os.listdir(work)):
        counted = instructions(work)
        if counted:
            text = replace_block(text, BEGIN, END, "\n".join(preamble(params) + counted))
        open(docs, "w").write(text)
        return
    out = preamble(params) + throughput(data, [s for s in "abcf" if s in measured])

    crit_path = os.path.join(work, "criterion.txt")
    crit = open(crit_path).read() if os.path.exists(crit_path) else ""
    out.append("### Decision engine (`cargo bench -p grayline-dataplane --bench decision`)")
    out.append("")
    out.append("| scenario | ns per decision (criterion median) |")
    out.append("|---|---:|")
    for name, label in [("a_pass_through", "(a) one version"), ("b_sticky_canary", "(b) sticky 10 % canary"),
                        ("c_six_rules", "(c) six rules + split, User-Agent classified")]:
        m = re.search(name + r"\s+time:\s+\[[\d.]+ \w+ ([\d.]+) (\w+)", crit)
        if m:
            v, unit = float(m.group(1)), m.group(2)
            ns = v * {"ps": 0.001, "ns": 1, "µs": 1000, "us": 1000, "ms": 1e6}.get(unit, 1)
            out.append(f"| {label} | {ns:.0f} |")
    out.append("")

    out.append("### Config propagation and server memory (`grayline-propagation`)")
    out.append("")
    out.append("Time from a policy write being acknowledged to the last simulated proxy having ACKed it, "
               "over the real config stream, one connection per proxy; the proxies, the tool and the "
               "server share the machine's 2 cores.")
    out.append("")
    out.append("| proxies | changes | p50 ms | p99 ms | max ms | write p50 ms | server RSS before → after | per proxy |")
    out.append("|---:|---:|---:|---:|---:|---:|---|---:|")
    for f in sorted(os.listdir(work)):
        if f.startswith("propagation-") and f.endswith(".json"):
            p = json.load(open(os.path.join(work, f)))
            per = p.get("server_kb_per_proxy")
            per_text = f"{per:.1f} KiB" if per is not None else "n/a"
            rss = (f"{p['server_rss_before_kb'] / 1024:.1f} MiB → {p['server_rss_with_proxies_kb'] / 1024:.1f} MiB"
                   if p.get("server_rss_before_kb") else "n/a")
            out.append(f"| {p['proxies']} | {p['changes']} | {p['propagation_p50_ms']:.1f} | "
                       f"{p['propagation_p99_ms']:.1f} | {p['propagation_max_ms']:.1f} | {p['write_p50_ms']:.1f} | "
                       f"{rss} | {per_text} |")
    out.append("")
    instance_rows = []
    for f in sorted(os.listdir(work)):
        if f.startswith("propagation-") and f.endswith(".json"):
            p = json.load(open(os.path.join(work, f)))
            if "instance_propagation_p50_ms" not in p:
                continue
            churn = p.get("churn") or {}
            cpu = churn.get("server_cpu_percent")
            churn_text = (f"{churn['operations_per_s']:.0f}/s: {churn['pushes_per_proxy_per_s']:.1f} pushes "
                          f"per proxy per s, server CPU {cpu:.0f} %" if churn and cpu is not None else "—")
            instance_rows.append(
                f"| {p['proxies']} | {p['instance_propagation_p50_ms']:.1f} | {p['instance_propagation_p99_ms']:.1f} | "
                f"{p['propagation_p50_ms']:.1f} | {p['propagation_p99_ms']:.1f} | {p['registration_p50_ms']:.1f} | {churn_text} |")
    if instance_rows:
        out.append("Instance registrations (a new instance of a tagged version, through `grayline.v1.Registry`) "
                   "against config writes, in the same run: from the registration being acknowledged to the last "
                   "proxy having ACKed the instances-only push that lists it; then registration churn "
                   "(registrations and deregistrations alternating).")
        out.append("")
        out.append("| proxies | instance p50 ms | instance p99 ms | config write p50 ms | config write p99 ms | registration ack p50 ms | churn |")
        out.append("|---:|---:|---:|---:|---:|---:|---|")
        out.extend(instance_rows)
        out.append("")
    stats_path = os.path.join(work, "stats-memory.json")
    if os.path.exists(stats_path):
        st = json.load(open(stats_path))
        grown = st["server_rss_after_kb"] - st["server_rss_before_kb"]
        out.append(f"Server memory while {st['proxies']} simulated proxies report statistics of "
                   f"{st['versions_per_report']} versions once a second for {st['seconds']} s "
                   f"(`grayline-stats-load`): {st['server_rss_before_kb'] / 1024:.1f} MiB → "
                   f"{st['server_rss_after_kb'] / 1024:.1f} MiB RSS, "
                   f"{grown / st['proxies']:.1f} KiB per reporting proxy; "
                   f"{st['acked_per_second']:.0f} reports acknowledged a second, "
                   f"acknowledgement p50 {st['ack_ms_p50']:.1f} ms, p99 {st['ack_ms_p99']:.1f} ms.")
        out.append("")
    mem = json.load(open(os.path.join(work, "memory.json")))
    out.append("### Proxy memory")
    out.append("")
    out.append(f"- idle, config loaded: {mem['proxy_idle_rss_kb'] / 1024:.1f} MiB RSS")
    out.append(f"- peak under load (all runs above): {mem['proxy_peak_rss_kb'] / 1024:.1f} MiB RSS")
    if mem.get("proxy_many_idle_rss_kb"):
        versions = 2 * mem["many_services"]
        per = (mem["proxy_many_idle_rss_kb"] - mem["proxy_few_idle_rss_kb"]) / versions
        out.append(f"- a fresh proxy, idle: {mem['proxy_few_idle_rss_kb'] / 1024:.1f} MiB RSS; with "
                   f"{mem['many_services']} more services of two versions each: "
                   f"{mem['proxy_many_idle_rss_kb'] / 1024:.1f} MiB, {per:.1f} KiB per configured version")
    out.append("")
    out += where_the_time_goes(work)
    out += instructions(work)
    open(docs, "w").write(replace_block(text, BEGIN, END, "\n".join(out)))


def wrk_requests(path):
    return int(re.search(r"(\d+) requests in", open(path).read()).group(1))


def where_the_time_goes(work):
    """Per-request costs from the profile runs (bench/run section 6), if it ran."""
    runs = sorted(f[len("profile-"):-len(".cpu")] for f in os.listdir(work)
                  if f.startswith("profile-") and f.endswith(".cpu"))
    if not runs:
        return []
    out = ["### Where the time goes (per request)", "",
           "One run of each target for the CPU split (`/proc`), a second under `perf stat` for the counts "
           "(syscall tracepoints, a uprobe on glibc's `malloc`, context switches, CPU migrations); in (f) "
           "every worker process of nginx, and the proxy's process.", "",
           "| scenario | target | user µs | kernel µs | syscalls | of which | malloc calls | context switches | migrations |",
           "|---|---|---:|---:|---:|---|---:|---:|---:|"]
    for run in runs:
        scenario, target = run.split("-", 1)
        base = os.path.join(work, f"profile-{run}")
        u0, s0, u1, s1, hz = map(int, open(base + ".cpu").read().split())
        n = wrk_requests(base + ".plain")
        user, kernel = (u1 - u0) / hz * 1e6 / n, (s1 - s0) / hz * 1e6 / n
        counted = wrk_requests(base + ".counted")
        calls, mallocs, switches, migrations = {}, None, None, None
        for line in open(base + ".perf"):
            fields = line.strip().split(",")
            if len(fields) < 3 or not fields[0].replace(".", "").isdigit():
                continue
            value, event = float(fields[0]), fields[2]
            if event.startswith("syscalls:sys_enter_"):
                if value:
                    calls[event[len("syscalls:sys_enter_"):]] = value / counted
            elif event == "probe_libc:malloc":
                mallocs = value / counted
            elif event in ("context-switches", "cs"):
                switches = value / counted
            elif event in ("cpu-migrations", "migrations"):
                migrations = value / counted
        top = sorted(calls.items(), key=lambda kv: -kv[1])
        of_which = ", ".join(f"{name} {per:.2f}" for name, per in top[:5] if per >= 0.01)
        fmt = lambda x: "–" if x is None else f"{x:.2f}"
        out.append(f"| {scenario} | {target} | {user:.2f} | {kernel:.2f} | {sum(calls.values()):.2f} | {of_which} | "
                   f"{fmt(mallocs)} | {fmt(switches)} | {fmt(migrations)} |")
    out.append("")
    return out


def callgrind_total(path):
    # `totals:`, not `summary:`: after a zeroing callgrind's summary can wrap below zero.
    for line in open(path):
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise ValueError(f"no totals in {path}")


def instructions(work):
    """Instructions per request under callgrind (bench/run section 7), if it ran."""
    counted = {}
    for f in os.listdir(work):
        if f.startswith("instr-") and f.endswith(".cg"):
            scenario, target = f[len("instr-"):-len(".cg")].split("-", 1)
            base = os.path.join(work, f[:-len(".cg")])
            counted[(scenario, target)] = callgrind_total(base + ".cg") / wrk_requests(base + ".wrk")
    if not counted:
        return []
    targets = [t for t in ("nginx", "grayline", "grayline-nostats", "grayline-base")
               if any(k[1] == t for k in counted)]
    out = ["### Instructions per request (callgrind)", "",
           "Each target alone under `valgrind --tool=callgrind`, instrumented only while wrk sends requests "
           "over 4 connections; every instruction the process ran (all threads, kernel excluded) over "
           "the requests answered. Unlike CPU time, this does not drift between runs.", "",
           "| scenario | " + " | ".join(targets) + " | grayline / nginx |",
           "|---|" + "---:|" * (len(targets) + 1)]
    for s in sorted({k[0] for k in counted}):
        row = [f"{counted[(s, t)]:,.0f}" if (s, t) in counted else "–" for t in targets]
        ratio = (f"{counted[(s, 'grayline')] / counted[(s, 'nginx')]:.2f} ×"
                 if (s, "grayline") in counted and (s, "nginx") in counted else "–")
        out.append(f"| {SCENARIOS[s]} | " + " | ".join(row) + f" | {ratio} |")
    out.append("")
    for s in sorted({k[0] for k in counted}):
        on, off = counted.get((s, "grayline")), counted.get((s, "grayline-nostats"))
        if on and off:
            out.append(f"- {SCENARIOS[s]}: statistics cost {(on / off - 1) * 100:+.1f} % instructions "
                       f"({on - off:,.0f} per request).")
    out.append("")
    return out


def replace_block(text, begin, end, block):
    if begin not in text:
        text += f"\n{begin}\n{end}\n"
    start, stop = text.index(begin) + len(begin), text.index(end)
    return text[:start] + "\n" + block + "\n" + text[stop:]


if __name__ == "__main__":
    if sys.argv[1] == "wrk":
        rps, p50, p99, failures = parse_wrk(sys.argv[2])
        requests = wrk_requests(sys.argv[2])
        ticks, hz = int(sys.argv[6]), int(sys.argv[7])
        cpu_us = ticks / hz * 1e6 / max(requests, 1)
        print("\t".join([sys.argv[3], sys.argv[4], sys.argv[5], f"{rps:.1f}", f"{p50:.3f}", f"{p99:.3f}",
                         str(failures), f"{cpu_us:.2f}"]))
    elif sys.argv[1] == "h2load":
        rps, p50, p99, failures, done = parse_h2load(sys.argv[2])
        ticks, hz = int(sys.argv[6]), int(sys.argv[7])
        cpu_us = ticks / hz * 1e6 / max(done, 1)
        print("\t".join([sys.argv[3], sys.argv[4], sys.argv[5], f"{rps:.1f}", f"{p50:.3f}", f"{p99:.3f}",
                         str(failures), f"{cpu_us:.2f}"]))
    elif sys.argv[1] == "report":
        report(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit(__doc__)
