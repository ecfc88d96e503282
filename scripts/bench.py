#!/usr/bin/env python3
"""Fleet broker benchmark driver: starts the broker (and Mosquitto for the baseline) on
127.0.0.1, drives each with `sim-device bench`, samples the brokers' CPU and RSS from
/proc at the simulator's events, restarts the broker for the reconnect storm, and prints a
Markdown report (optionally written to a file). Every run is bounded in time.

Run it through scripts/bench.sh, which builds in release mode and raises `ulimit -n`.
"""
import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HZ = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return (int(rest[11]) + int(rest[12])) / HZ
    except (OSError, IndexError, ValueError):
        return None


def rss_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError):
        return None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, limit=20.0):
    end = time.time() + limit
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def machine():
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError):
        pass
    mosq = "not installed"
    if shutil.which("mosquitto"):
        out = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True).stdout
        mosq = (out.splitlines() or ["mosquitto ?"])[0]
    return {
        "cores": os.cpu_count(),
        "model": model,
        "memory": mem,
        "kernel": platform.release(),
        "mosquitto": mosq,
        "loadavg": open("/proc/loadavg").read().split()[0:3] if os.path.exists("/proc/loadavg") else "?",
        "nofile": subprocess.run(["sh", "-c", "ulimit -n"], capture_output=True, text=True).stdout.strip(),
    }


# With --unlocks: the simulator's lock topics open to every client (no auth in the bench),
# and the broker tracking them as the unlock journey.
UNLOCK_JOURNEY = (
    '[[acl]]\ntopic = "vehicles/+/lock/#"\naccess = "readwrite"\nwho = "anyone"\n'
    '[[journeys]]\nname = "unlock"\nrequest = "vehicles/{id}/lock/request"\n'
    'response = "vehicles/{id}/lock/result"\nkey = "request_id"\n'
    'success = { field = "ok", equals = true }\n'
)


class Target:
    """A broker under test: start, restart, stop, and (for Mosquitto) the stand-in."""

    def __init__(self, kind, args, workdir, port):
        self.kind, self.args, self.workdir, self.port = kind, args, workdir, port
        self.http_port = free_port()
        self.proc = None
        self.standin = None
        self.standin_counts = {}
        self.logs = []

    def _spawn(self, cmd, name, env=None):
        path = os.path.join(self.workdir, f"{name}.log")
        f = open(path, "ab")
        self.logs.append(path)
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)

    def _fleet_conf(self, mqtt):
        conf = os.path.join(self.workdir, "fleet.toml")
        with open(conf, "w") as f:
            f.write(
                mqtt +
                f'[heartbeat]\ntimeout = "{self.args.timeout}"\n'
                '[commands]\nresend_interval = "1ms"\n'
                f'[store]\npath = "{self.workdir}/fleet.db"\n'
                f'[http]\nlisten = "127.0.0.1:{self.http_port}"\n'
                # The bench drives each vehicle far above a real one's rate to find the
                # broker's capacity; per-vehicle policing would cap it instead.
                '[limits]\npublish_rate = 1000000\npublish_burst = 1000000\n'
                'disconnect_after = 0\n'
                + (UNLOCK_JOURNEY if self.args.unlocks else "")
            )
        return conf

    def start(self):
        env = dict(os.environ, RUST_LOG="warn")
        if self.kind == "fleet-broker":
            conf = self._fleet_conf(
                f'[mqtt]\nlisten = "127.0.0.1:{self.port}"\nmax_connections = 100000\n')
            self.proc = self._spawn([self.args.broker_bin, "--config", conf], "fleet-broker", env)
            self._wait_listening()
            return
        # Mosquitto serves the vehicles, with the stand-in or the broker attached as its
        # client; that side is started once and reconnects by itself after a restart.
        conf = os.path.join(self.workdir, "mosquitto.conf")
        with open(conf, "w") as f:
            f.write(
                f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                "persistence false\nset_tcp_nodelay true\nmax_queued_messages 100000\n"
                "log_dest stderr\nlog_type error\nlog_type warning\n"
            )
        self.proc = self._spawn(["mosquitto", "-c", conf], "mosquitto")
        self._wait_listening()
        if self.standin is not None:
            return
        if self.kind == "mosquitto":
            self.standin = subprocess.Popen(
                [self.args.sim_bin, "standin", "--broker", f"127.0.0.1:{self.port}", "--qos", "1"],
                stdout=subprocess.PIPE, stderr=open(os.path.join(self.workdir, "standin.log"), "ab"),
                text=True,
            )
            threading.Thread(target=self._read_standin, daemon=True).start()
            return
        conf = self._fleet_conf(
            f'[mqtt]\nmode = "attach"\n[mqtt.attach]\nurl = "mqtt://127.0.0.1:{self.port}"\n')
        self.standin = self._spawn([self.args.broker_bin, "--config", conf], "fleet-broker", env)
        # Ready once attached (its /readyz says so), so no vehicle's first uplink is missed.
        for _ in range(200):
            if self.standin.poll() is not None:
                raise RuntimeError(f"fleet-broker (attached) exited at start; see {self.logs[-1]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/readyz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"fleet-broker did not attach within 20 s; see {self.logs[-1]}")

    def _wait_listening(self):
        time.sleep(0.05)
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.kind} exited at start ({self.proc.returncode}); see {self.logs[-1]}")
        if not wait_port(self.port):
            raise RuntimeError(f"{self.kind} did not listen on 127.0.0.1:{self.port}; see {self.logs[-1]}")

    def _read_standin(self):
        for line in self.standin.stdout:
            try:
                self.standin_counts = json.loads(line)
            except ValueError:
                pass

    def kill_and_restart(self):
        self.proc.kill()
        self.proc.wait()
        self.start()

    def stop(self):
        for p in (self.standin, self.proc):
            if p and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.standin = None

    def cpu(self):
        total = cpu_seconds(self.proc.pid) or 0.0
        side = cpu_seconds(self.standin.pid) if self.standin else None
        return total, side

    def rss(self):
        return rss_mib(self.proc.pid), (rss_mib(self.standin.pid) if self.standin else None)


def run_one(args, kind, n, last):
    """One broker, one fleet size: every phase the simulator runs, with /proc samples."""
    workdir = tempfile.mkdtemp(prefix=f"bench-{kind}-{n}-")
    port = free_port()
    target = Target(kind, args, workdir, port)
    target.start()
    cmd = [
        args.sim_bin, "bench", "--broker", f"127.0.0.1:{port}", "--vehicles", str(n),
        "--ramp", f"{args.ramp}/s", "--rates", ",".join(map(str, args.rates)),
        "--qos-levels", args.qos, "--step", args.step, "--timeout", args.timeout,
        "--background", args.background, "--wait-limit", args.wait_limit,
        "--probe-fraction", str(args.probe_fraction), "--prefix", f"{kind[:1]}{n}",
    ]
    if last and kind in ("fleet-broker", "attached"):
        cmd += ["--detect", str(args.detect)]
    if last:
        cmd += ["--storm"]
    if args.unlocks:
        cmd += ["--unlocks", f"{args.unlocks}/s"]
    log(f"{kind}: {n} vehicles (logs in {workdir})")
    sim = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=open(os.path.join(workdir, "sim.log"), "ab"), text=True)
    killer = threading.Timer(args.run_limit, sim.kill)
    killer.start()
    events = []
    mark = None
    try:
        for line in sim.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            name = ev.get("event")
            if name == "connected":
                time.sleep(0.5)
                ev["broker_rss_mib"], ev["standin_rss_mib"] = target.rss()
                log(f"  connected {ev['connected']}/{n} in {ev['connect_s']} s, broker RSS {ev['broker_rss_mib']:.0f} MiB")
            elif name in ("step_start", "unlock_step_start"):
                mark = (time.time(), *target.cpu(), target.standin_counts.get("heartbeats", 0))
            elif name in ("step_end", "unlock_step_end") and mark:
                wall = time.time() - mark[0]
                cpu, side = target.cpu()
                ev["broker_cpu"] = round((cpu - mark[1]) / wall, 3)
                if side is not None and mark[2] is not None:
                    ev["standin_cpu"] = round((side - mark[2]) / wall, 3)
                    ev["standin_heartbeats"] = target.standin_counts.get("heartbeats", 0) - mark[3]
                ev["broker_rss_mib"], ev["standin_rss_mib"] = target.rss()
                ev["loadavg_1m"] = loadavg()
                if name == "unlock_step_end":
                    # Cumulative: every request of the steps so far has ended by now.
                    ev["broker_journey_requests"] = metric_sum(target.http_port, "fleet_journey_requests_total")
                    ev["broker_journey_succeeded"] = metric_sum(
                        target.http_port, 'fleet_journey_ends_total{journey="unlock",outcome="succeeded"')
                log(f"  qos{ev['qos']} {ev['rate']}/s{' + unlocks' if name.startswith('unlock') else ''}: delivered {ev['delivered_rate']}/s, rtt p99 {ev['rtt']['p99_ms']} ms, broker cpu {ev['broker_cpu']}, sim cpu {ev['sim_cpu']}")
            elif name == "storm_ready":
                log("  reconnect storm: killing and restarting the broker")
                ev["restart_unix_ms"] = int(time.time() * 1000)
                target.kill_and_restart()
            elif name in ("detect", "storm"):
                log(f"  {name}: {json.dumps(ev)}")
            events.append(ev)
        sim.wait()
    finally:
        killer.cancel()
        if sim.poll() is None:
            sim.kill()
        target.stop()
    if sim.returncode != 0:
        log(f"  sim-device exited with {sim.returncode}; see {workdir}/sim.log")
    return events


def fmt(x, digits=0):
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return f"{x:,}"


def ratio(a, b, digits=2):
    if a is None or b is None or b == 0:
        return "–"
    return f"{a / b:.{digits}f}×"


def metric_sum(http_port, name):
    """The sum of a metric's series in the broker's /metrics, or None."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return None
    # A name with a label prefix (`family{a="b"`) matches the series that start with it.
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " ")
               or ("{" in name and line.startswith(name)))


def operating_point(args, kind, n):
    """N vehicles at a real heartbeat period: CPU and RSS over a quiet window once every
    vehicle has sent its first heartbeat (the steady state a fleet runs in)."""
    op = argparse.Namespace(**vars(args))
    op.timeout = f"{3 * args.op_heartbeat + 5}s"  # the bench's short timeout would evict them
    workdir = tempfile.mkdtemp(prefix=f"bench-op-{kind}-{n}-")
    target = Target(kind, op, workdir, free_port())
    target.start()
    ramp_s = n / args.ramp
    warm_s = args.op_heartbeat * 1.15  # the sim's periods are drawn within +-10 %
    run_s = int(ramp_s + warm_s + args.op_seconds + 10)
    sim = subprocess.Popen(
        [args.sim_bin, "run", "--broker", f"127.0.0.1:{target.port}", "--vehicles", str(n),
         "--heartbeat", f"{args.op_heartbeat}s", "--ramp", f"{args.ramp}/s", "--prefix", f"o{kind[:1]}{n}",
         "--duration", f"{run_s}s", "--summary-every", "10s"],
        stdout=open(os.path.join(workdir, "sim.log"), "w"), stderr=subprocess.STDOUT)
    log(f"operating point, {kind}: {n} vehicles on {args.op_heartbeat} s heartbeats (logs in {workdir})")
    try:
        time.sleep(ramp_s + warm_s)
        cpu0, side0, t0 = *target.cpu(), time.time()
        time.sleep(args.op_seconds)
        cpu1, side1 = target.cpu()
        wall = time.time() - t0
        broker_rss, side_rss = target.rss()
        tracked = metric_sum(target.http_port, "fleet_vehicles") if kind != "mosquitto" else None
        ev = {
            "event": "operating_point", "vehicles": n, "heartbeat_s": args.op_heartbeat,
            "seconds": round(wall, 1), "tracked": tracked,
            "broker_cpu": round((cpu1 - cpu0) / wall, 4),
            "side_cpu": round((side1 - side0) / wall, 4) if side0 is not None and side1 is not None else None,
            "broker_rss_mib": broker_rss, "side_rss_mib": side_rss,
        }
        log(f"  cpu {ev['broker_cpu']} + {ev['side_cpu']} cores, RSS {broker_rss:.1f} + {side_rss or 0:.1f} MiB, tracked {tracked}")
        return ev
    finally:
        sim.kill()
        sim.wait()
        target.stop()


def op_section(args, op):
    """The operating-point table: per kind, CPU per heartbeat and memory at N vehicles."""
    L = ["## 0. Operating point: a real heartbeat period\n",
         f"N vehicles on {args.op_heartbeat} s heartbeats, CPU averaged over {args.op_seconds} s once every vehicle "
         "had sent its first heartbeat, RSS at the end; the broker's heartbeat timeout is 3 periods + 5 s here. "
         "Mosquitto + stand-in and Mosquitto + attached broker count both processes.\n",
         "| setup | N | CPU cores | µs per heartbeat | RSS MiB | tracked | ÷ Mosquitto + stand-in (CPU, RSS) |",
         "|---|---:|---:|---:|---:|---:|---:|"]
    names = {"fleet-broker": "embedded", "mosquitto": "Mosquitto + stand-in", "attached": "Mosquitto + attached broker"}
    total = lambda e, k: (e[k] or 0) + (e[k.replace("broker", "side")] or 0)
    base = op.get("mosquitto", {})
    for kind in ("fleet-broker", "mosquitto", "attached"):
        for n, e in sorted(op.get(kind, {}).items()):
            cpu, rss = total(e, "broker_cpu"), total(e, "broker_rss_mib")
            per_hb = cpu / (n / e["heartbeat_s"]) * 1e6
            b = base.get(n)
            vs = (f"{cpu / total(b, 'broker_cpu'):.2f}×, {rss / total(b, 'broker_rss_mib'):.2f}×"
                  if b and kind != "mosquitto" and total(b, "broker_cpu") else "")
            L.append(f"| {names[kind]} | {n:,} | {cpu:.3f} | {per_hb:.1f} | {rss:.1f} | "
                     f"{'' if e['tracked'] is None else int(e['tracked'])} | {vs} |")
    return "\n".join(L) + "\n"


def slope(points):
    pts = [(n, r) for n, r in points if r is not None]
    if len(pts) < 2:
        return None, None
    mx = sum(n for n, _ in pts) / len(pts)
    my = sum(r for _, r in pts) / len(pts)
    den = sum((n - mx) ** 2 for n, _ in pts)
    if den == 0:
        return None, None
    k = sum((n - mx) * (r - my) for n, r in pts) / den
    return k, my - k * mx


def attached_section(w, results, steps, rss, storms):
    """Attach mode beside embedded and Mosquitto + stand-in, same load, same run."""
    w("## 5. Attach mode: Mosquitto + fleet-broker attached\n")
    w("The same load against Mosquitto with fleet-broker attached as its client (`[mqtt] mode = \"attach\"`), "
      "beside the embedded broker and Mosquitto + stand-in. CPU is Mosquitto's plus the attached broker's.\n")
    w("| N | QoS | offered/s | attached µs/heartbeat (Mosq + broker) | Mosq + stand-in µs/heartbeat | embedded µs/heartbeat | attached ÷ (Mosq + stand-in) | attached RTT p99 ms | Mosq + stand-in RTT p99 ms |")
    w("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    key = lambda e: (e["vehicles"], e["qos"], e["rate"])
    by = {k: {key(e): e for e in steps.get(k, [])} for k in ("attached", "mosquitto", "fleet-broker")}
    def per(e, *fields):
        if not e or not e.get("delivered_rate") or any(e.get(f) is None for f in fields):
            return None
        return sum(e[f] for f in fields) / e["delivered_rate"] * 1e6
    for k in sorted(by["attached"]):
        a, m, o = by["attached"][k], by["mosquitto"].get(k), by["fleet-broker"].get(k)
        au, mu, ou = per(a, "broker_cpu", "standin_cpu"), per(m, "broker_cpu", "standin_cpu"), per(o, "broker_cpu")
        w(f"| {fmt(k[0])} | {k[1]} | {fmt(k[2])} | {fmt(au, 1)} | {fmt(mu, 1)} | {fmt(ou, 1)} | {ratio(au, mu)} | "
          f"{fmt(a['rtt']['p99_ms'], 1)} | {fmt(m['rtt']['p99_ms'], 1) if m else '–'} |")
    w("\nMemory after all N connected (RSS MiB):\n")
    w("| N | Mosq + attached broker | Mosq + stand-in | embedded |")
    w("|---:|---:|---:|---:|")
    for n in sorted(rss.get("attached", {})):
        a = rss["attached"][n]
        m = rss.get("mosquitto", {}).get(n, (None, None))
        o = rss.get("fleet-broker", {}).get(n, (None, None))
        tot = lambda t: (t[0] or 0) + (t[1] or 0) if t[0] is not None else None
        w(f"| {fmt(n)} | {fmt(a[0], 1)} + {fmt(a[1], 1)} | {fmt(m[0], 1)} + {fmt(m[1], 1)} | {fmt(o[0], 1)} |")
    pts = [(n, (v[0] or 0) + (v[1] or 0)) for n, v in rss.get("attached", {}).items()]
    mpts = [(n, (v[0] or 0)) for n, v in rss.get("mosquitto", {}).items()]
    ka, _ = slope(pts)
    km, _ = slope(mpts)
    kb, _ = slope([(n, v[1]) for n, v in rss.get("attached", {}).items() if v[1] is not None])
    if ka is not None and km is not None and kb is not None:
        w(f"\nPer connected vehicle: attached {ka * 1024:.2f} KiB (Mosquitto + broker), Mosquitto in the stand-in run "
          f"{km * 1024:.2f} KiB: the pair adds {(ka - km) * 1024:.2f} KiB per vehicle, of which the broker's own RSS "
          f"{kb * 1024:.2f} KiB; the rest is Mosquitto holding what the contract retains upstream (one "
          f"`vehicles/{{id}}/service` per vehicle) and the broker's subscription. Taken right after the connect "
          f"ramp, so it includes what the registration burst still holds.")
    st = storms.get("attached")
    if st:
        w(f"\nUpstream restart (Mosquitto killed and restarted, the broker reconnects by itself): all tracked after "
          f"{fmt(st.get('all_tracked_s'), 2)} s, {fmt(st.get('tracked'))} tracked.")
    w("")


def unlock_section(w, args, results, steps):
    """Each rate step run twice in a row, the second time with a backend sending unlock
    requests that the vehicles answer (and the broker tracks as a journey)."""
    unlock = {k: [e for n in results[k] for e in results[k][n] if e.get("event") == "unlock_step_end"]
              for k in results}
    if not any(unlock.values()):
        return
    w(f"## 6. The heartbeat path with {fmt(args.unlocks)} unlocks/s tracked\n")
    w("Each rate step runs twice in a row: as in section 1, then with a backend sending "
      f"{fmt(args.unlocks)} unlock requests/s to random vehicles, which answer after 20 ms; the broker "
      "routes both ways and tracks every request as the `unlock` journey (Mosquitto only routes them). "
      "Same fleet, same process, same minute: the difference is the unlocks.\n")
    w("| broker | N | QoS | offered hb/s | delivered hb/s without / with | RTT p50 without / with ms | RTT p99 without / with ms | p99 with ÷ without | broker CPU without / with | unlocks sent / ok | unlock p50 / p99 ms | broker tracked |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    key = lambda e: (e["vehicles"], e["qos"], e["rate"])
    for kind, lst in unlock.items():
        plain = {key(e): e for e in steps.get(kind, [])}
        for u in lst:
            p_ = plain.get(key(u))
            b = u.get("backend", {})
            lat = u.get("unlock_latency", {})
            g = lambda e, f: (f(e) if e else None)
            tracked = u.get("broker_journey_requests")
            w("| {} | {} | {} | {} | {} / {} | {} / {} | {} / {} | {} | {} / {} | {} / {} | {} / {} | {} |".format(
                kind, fmt(u["vehicles"]), u["qos"], fmt(u["rate"]),
                fmt(g(p_, lambda e: e["delivered_rate"])), fmt(u["delivered_rate"]),
                fmt(g(p_, lambda e: e["rtt"]["p50_ms"]), 1), fmt(u["rtt"]["p50_ms"], 1),
                fmt(g(p_, lambda e: e["rtt"]["p99_ms"]), 1), fmt(u["rtt"]["p99_ms"], 1),
                ratio(u["rtt"]["p99_ms"], g(p_, lambda e: e["rtt"]["p99_ms"])),
                fmt(g(p_, lambda e: e.get("broker_cpu")), 2), fmt(u.get("broker_cpu"), 2),
                fmt(b.get("sent")), fmt(b.get("ok")),
                fmt(lat.get("p50_ms"), 1), fmt(lat.get("p99_ms"), 1),
                "–" if tracked is None else fmt(tracked) + " (total)",
            ))
    w("\nBroker tracked = the broker's `fleet_journey_requests_total` after the step, counting every "
      "step so far (the backend's sent, summed over the steps, is the figure to compare).\n")


def report(args, info, results, command):
    L = []
    w = L.append
    kinds = [k for k in ("fleet-broker", "mosquitto", "attached") if k in results]
    steps = {k: [e for n in results[k] for e in results[k][n] if e.get("event") == "step_end"] for k in kinds}
    w("# Benchmarks\n")
    w(f"Produced by `{command}` on {time.strftime('%Y-%m-%d %H:%M %Z')}.\n")
    w("## Machine\n")
    w(f"- CPU: {info['model']}, {info['cores']} cores; memory {info['memory']}; kernel {info['kernel']}; open files per process: {info['nofile']}")
    w(f"- Baseline: {info['mosquitto']} (plain relay) + `sim-device standin` (one subscriber standing in for the rules engine)")
    if info.get("nice"):
        w(f"- Brokers, stand-in and simulator ran at niceness {info['nice']} (other jobs on this shared machine at 0)")
    w(f"- Load average when the run started: {' '.join(info['loadavg'])} (other work on the machine shares the cores too)")
    w("- Everything (broker, Mosquitto, simulator) shares these cores; traffic goes only to 127.0.0.1.\n")
    w("## 1. Sustained heartbeats\n")
    w("Offered = scheduled heartbeats/s; delivered/s = heartbeats sent ÷ (step + drain until every vehicle's barrier probe is answered). "
      "RTT = probe heartbeat → corrective command at the vehicle (uplink, rules or stand-in, downlink). CPU in cores (1.0 = one core); "
      "Mosquitto's CPU is shown as relay + stand-in.\n")
    w("| N | QoS | offered/s | ours delivered/s | Mosquitto delivered/s | ours ÷ Mosq | ours RTT p50 / p99 ms | Mosq RTT p50 / p99 ms | ours broker CPU | Mosq CPU (+stand-in) | sim CPU (ours / Mosq run) | load 1m (ours / Mosq run) |")
    w("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    key = lambda e: (e["vehicles"], e["qos"], e["rate"])
    ours = {key(e): e for e in steps.get("fleet-broker", [])}
    mosq = {key(e): e for e in steps.get("mosquitto", [])}
    for k in sorted(set(ours) | set(mosq)):
        o, m = ours.get(k), mosq.get(k)
        g = lambda e, f: (f(e) if e else None)
        w("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
            fmt(k[0]), k[1], fmt(k[2]),
            fmt(g(o, lambda e: e["delivered_rate"])) + (" (knee)" if o and o["knee"] else ""),
            fmt(g(m, lambda e: e["delivered_rate"])) + (" (knee)" if m and m["knee"] else ""),
            ratio(g(o, lambda e: e["delivered_rate"]), g(m, lambda e: e["delivered_rate"])),
            f"{fmt(g(o, lambda e: e['rtt']['p50_ms']), 1)} / {fmt(g(o, lambda e: e['rtt']['p99_ms']), 1)}",
            f"{fmt(g(m, lambda e: e['rtt']['p50_ms']), 1)} / {fmt(g(m, lambda e: e['rtt']['p99_ms']), 1)}",
            fmt(g(o, lambda e: e.get("broker_cpu")), 2),
            f"{fmt(g(m, lambda e: e.get('broker_cpu')), 2)} (+{fmt(g(m, lambda e: e.get('standin_cpu')), 2)})",
            f"{fmt(g(o, lambda e: e.get('sim_cpu')), 2)} / {fmt(g(m, lambda e: e.get('sim_cpu')), 2)}",
            f"{fmt(g(o, lambda e: e.get('loadavg_1m')), 1)} / {fmt(g(m, lambda e: e.get('loadavg_1m')), 1)}",
        ))
    w("\nCPU cost per delivered heartbeat (broker CPU-seconds ÷ heartbeats, µs; robust to other load on the machine, "
      "unlike the rates): a quiet 2-core box has 2,000,000 µs/s to share between broker and simulator.\n")
    w("| N | QoS | offered/s | ours µs/heartbeat | Mosquitto µs/heartbeat (+ stand-in) | ours ÷ (Mosq + stand-in) |")
    w("|---:|---:|---:|---:|---:|---:|")
    def us_per(e, key):
        if not e or e.get(key) is None or not e.get("delivered_rate"):
            return None
        return e[key] / e["delivered_rate"] * 1e6
    for k in sorted(set(ours) | set(mosq)):
        o, m = ours.get(k), mosq.get(k)
        ou, mu, su = us_per(o, "broker_cpu"), us_per(m, "broker_cpu"), us_per(m, "standin_cpu")
        w(f"| {fmt(k[0])} | {k[1]} | {fmt(k[2])} | {fmt(ou, 1)} | {fmt(mu, 1)} (+{fmt(su, 1)}) | {ratio(ou, (mu or 0) + (su or 0) if mu is not None else None)} |")
    w("\nBest sustained rate (highest delivered/s with delivered ≥ 95 % of offered and p99 RTT ≤ 1 s), per N and QoS:\n")
    w("| N | QoS | ours | Mosquitto | ours ÷ Mosq |")
    w("|---:|---:|---:|---:|---:|")
    best = {}
    for kind, lst in steps.items():
        for e in lst:
            if not e["knee"]:
                b = best.setdefault((kind, e["vehicles"], e["qos"]), 0)
                best[(kind, e["vehicles"], e["qos"])] = max(b, e["delivered_rate"])
    for n, q in sorted({(e["vehicles"], e["qos"]) for lst in steps.values() for e in lst}):
        o, m = best.get(("fleet-broker", n, q)), best.get(("mosquitto", n, q))
        w(f"| {fmt(n)} | {q} | {fmt(o)} | {fmt(m)} | {ratio(o, m)} |")
    w("\n(A dash: no step met the criteria, i.e. the knee is below the lowest offered rate.)\n")

    w("## 2. Detection latency (ours; Mosquitto has no rules)\n")
    for kind in kinds:
        if kind != "mosquitto" and len(kinds) > 2:
            w(f"**{kind}**\n")
        for n, evs in results[kind].items():
            for e in evs:
                if e.get("event") == "detect":
                    so, si = e["service_out"], e["service_in"]
                    w(f"{fmt(e['silent'])} of {fmt(n)} vehicles went silent at unix ms {e['at_unix_ms']} under {fmt(e['background_rate'])} heartbeats/s of background load, timeout {e['timeout_s']} s.\n")
                    w("| | n | p50 ms | p99 ms | max ms | missing |")
                    w("|---|---:|---:|---:|---:|---:|")
                    w(f"| deadline (last heartbeat + timeout) → `service_out` at the vehicle | {so['n']} | {so['p50_ms']:.1f} | {so['p99_ms']:.1f} | {so['max_ms']:.1f} | {e['service_out_missing']} |")
                    w(f"| heartbeat resumes → `service_in` at the vehicle | {si['n']} | {si['p50_ms']:.1f} | {si['p99_ms']:.1f} | {si['max_ms']:.1f} | {e['service_in_missing']} |")
                    w(f"\nVehicles taken out that were not silent: {e['false_service_out']}.\n")
    w("## 3. Connect storm (broker killed with SIGKILL and restarted at once)\n")
    w("| broker | N | first reconnect s | all connected s | all tracked s (first heartbeat processed) | tracked |")
    w("|---|---:|---:|---:|---:|---:|")
    storms = {}
    for kind in kinds:
        for n, evs in results[kind].items():
            for e in evs:
                if e.get("event") == "storm":
                    storms[kind] = e
                    w(f"| {kind} | {fmt(n)} | {fmt(e.get('first_reconnect_s'), 2)} | {fmt(e.get('all_connected_s'), 2)} | {fmt(e.get('all_tracked_s'), 2)} | {fmt(e.get('tracked'))} |")
    if "fleet-broker" in storms and "mosquitto" in storms:
        w(f"\nours ÷ Mosquitto, all tracked: {ratio(storms['fleet-broker'].get('all_tracked_s'), storms['mosquitto'].get('all_tracked_s'))} (times measured from the first dropped connection the simulator saw).\n")
    w("\n## 4. Memory\n")
    w("RSS after all N vehicles connected and were tracked (one barrier probe answered each), fresh broker per N.\n")
    w("| N | ours RSS MiB | Mosquitto RSS MiB | stand-in RSS MiB |")
    w("|---:|---:|---:|---:|")
    rss = {k: {} for k in kinds}
    for kind in kinds:
        for n, evs in results[kind].items():
            for e in evs:
                if e.get("event") == "connected":
                    rss[kind][n] = (e.get("broker_rss_mib"), e.get("standin_rss_mib"))
    for n in sorted(set().union(*[set(v) for v in rss.values()])):
        o = rss.get("fleet-broker", {}).get(n, (None, None))
        m = rss.get("mosquitto", {}).get(n, (None, None))
        w(f"| {fmt(n)} | {fmt(o[0], 1)} | {fmt(m[0], 1)} | {fmt(m[1], 1)} |")
    slopes = {}
    for kind in kinds:
        k, b = slope([(n, v[0]) for n, v in rss[kind].items()])
        slopes[kind] = k
        if k is not None:
            w(f"\n{kind}: {k * 1024:.1f} KiB per connected vehicle (least-squares slope over N), {b:.0f} MiB at N = 0.")
    if slopes.get("fleet-broker") and slopes.get("mosquitto"):
        w(f"\nours ÷ Mosquitto per vehicle: {ratio(slopes['fleet-broker'], slopes['mosquitto'], 1)}.")
    w("\nRules state per tracked vehicle: 186 B at 1,000,000 vehicles (`cargo bench -p fleet-rules`, counting allocator), i.e. ~2 % of the broker's per-vehicle figure; the rest is the MQTT session.\n")
    if "attached" in results:
        attached_section(w, results, steps, rss, storms)
    unlock_section(w, args, results, steps)
    w("## Targets\n")
    w("| target | measured | met |")
    w("|---|---|---|")
    ours_ev = results.get("fleet-broker", {})
    n_max = max(ours_ev) if ours_ev else None
    conn = next((e for e in ours_ev.get(n_max, []) if e.get("event") == "connected"), None)
    if conn:
        w(f"| {fmt(n_max)} real vehicles connected on this {info['cores']}-core box | {fmt(conn['connected'])} connected, {fmt(conn['tracked'])} tracked | {'yes' if conn['tracked'] >= n_max else 'no'} |")
    for q in sorted({e["qos"] for lst in steps.values() for e in lst}):
        o = max((v for (k, n_, qq), v in best.items() if k == "fleet-broker" and qq == q and n_ == n_max), default=None)
        m = max((v for (k, n_, qq), v in best.items() if k == "mosquitto" and qq == q and n_ == n_max), default=None)
        if o is not None or m is not None:
            met = "yes" if (o and m and o >= m) else ("no" if (o is not None or m is not None) and m else "?")
            w(f"| sustained heartbeats with rules ≥ 1.0× Mosquitto relay (N = {fmt(n_max)}, QoS {q}) | {fmt(o)} vs {fmt(m)} msgs/s = {ratio(o, m)} | {met} |")
    det = next((e for e in ours_ev.get(n_max, []) if e.get("event") == "detect"), None)
    if det:
        p99 = det["service_out"]["p99_ms"]
        w(f"| detection p99 ≤ 1 s after the deadline at {fmt(n_max)} | p99 {p99:,.0f} ms, max {det['service_out']['max_ms']:,.0f} ms, {det['service_out_missing']} missing | {'yes' if p99 <= 1000 and not det['service_out_missing'] else 'no'} |")
    st = storms.get("fleet-broker")
    if st:
        t = st.get("all_tracked_s")
        w(f"| {fmt(n_max)} reconnect storm fully tracked ≤ 10 s | {fmt(t, 1) + ' s' if t is not None else 'not within the wait limit (' + fmt(st.get('tracked')) + ' tracked)'} | {'yes' if t is not None and t <= 10 else 'no'} |")
    k = slopes.get("fleet-broker")
    if k:
        w(f"| ≤ 10 KiB broker memory per connected vehicle | {k * 1024:.1f} KiB | {'yes' if k * 1024 <= 10 else 'no'} |")
    w("")
    w("## Raw events\n")
    w("<details><summary>JSON events from the simulator with the driver's samples</summary>\n\n```json")
    for kind in kinds:
        for n, evs in results[kind].items():
            for e in evs:
                w(json.dumps({"broker": kind, **e}))
    w("```\n</details>\n")
    return "\n".join(L)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--bin-dir", default="target/release")
    p.add_argument("--vehicles", default="1000,5000,10000,19000")
    p.add_argument("--rates", default="10000,20000,40000,80000")
    p.add_argument("--qos", default="0,1")
    p.add_argument("--step", default="8s")
    p.add_argument("--timeout", default="10s", help="broker heartbeat timeout for the bench")
    p.add_argument("--background", default="2s", help="heartbeat period during detection and storm")
    p.add_argument("--detect", type=float, default=0.01,
                   help="share of the fleet that goes silent; keep it below the mass-loss onset "
                        "(max(50, 20 %% of N) / 10), past which the guard pends evictions on purpose")
    p.add_argument("--probe-fraction", type=float, default=0.01)
    p.add_argument("--ramp", type=int, default=2000)
    p.add_argument("--wait-limit", default="60s")
    p.add_argument("--run-limit", type=float, default=900, help="seconds, per broker and N")
    p.add_argument("--skip-mosquitto", action="store_true")
    p.add_argument("--skip-attached", action="store_true",
                   help="no Mosquitto + fleet-broker attached run")
    p.add_argument("--out", help="write the Markdown report here too")
    p.add_argument("--json", help="write the raw results here")
    p.add_argument("--command", default=None, help="the command line to cite in the report")
    p.add_argument("--nice", type=int, default=0,
                   help="niceness for the brokers and the simulator (negative needs root): "
                        "keeps other work on a shared machine from dominating the figures")
    p.add_argument("--operating-point", default="",
                   help="fleet sizes (comma-separated) to also run at a real heartbeat period, "
                        "CPU and RSS in the steady state (section 0 of the report)")
    p.add_argument("--op-heartbeat", type=int, default=30, help="seconds, for --operating-point")
    p.add_argument("--op-seconds", type=int, default=60, help="measured window, for --operating-point")
    p.add_argument("--only-operating-point", action="store_true",
                   help="skip the rate steps, detection and storm; run only --operating-point")
    p.add_argument("--unlocks", type=int, default=0,
                   help="also run every rate step with this many unlock requests/s from a backend, "
                        "tracked by the broker as a journey (section 5 of the report)")
    p.add_argument("--check", action="store_true",
                   help="exit non-zero unless every phase completed with every vehicle accounted for (CI smoke)")
    args = p.parse_args()
    args.rates = [int(r) for r in args.rates.split(",")]
    args.broker_bin = os.path.join(args.bin_dir, "fleet-broker")
    args.sim_bin = os.path.join(args.bin_dir, "sim-device")
    for b in (args.broker_bin, args.sim_bin):
        if not os.access(b, os.X_OK):
            sys.exit(f"bench: {b} is missing; build first (scripts/bench.sh does)")
    kinds = ["fleet-broker"]
    if not args.skip_mosquitto:
        if shutil.which("mosquitto"):
            kinds.append("mosquitto")
            if not args.skip_attached:
                kinds.append("attached")
        else:
            log("mosquitto is not installed (apt-get install -y mosquitto): no baseline")
    if args.nice:
        os.nice(args.nice)
    info = machine()
    info["nice"] = args.nice
    log(f"machine: {info}")
    ns = [int(n) for n in args.vehicles.split(",")]
    op_ns = [int(n) for n in args.operating_point.split(",") if n]
    op = {kind: {n: operating_point(args, kind, n) for n in op_ns} for kind in kinds} if op_ns else {}
    results = {}
    if not args.only_operating_point:
        for kind in kinds:
            results[kind] = {}
            for n in ns:
                results[kind][n] = run_one(args, kind, n, n == ns[-1])
    command = args.command or " ".join(sys.argv)
    text = report(args, info, results, command) if results else f"# Benchmarks\n\nProduced by `{command}`.\n"
    if op:
        text += "\n" + op_section(args, op)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
        log(f"report written to {args.out}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "results": results, "operating_point": op}, f, indent=1)
    problems = []
    for kind, r in op.items():
        for n, e in r.items():
            if e["tracked"] is not None and e["tracked"] != n:
                problems.append(f"operating point, {kind} N={n}: {e['tracked']:.0f} vehicles tracked")
    for kind, r in results.items():
        for n, evs in r.items():
            names = [e.get("event") for e in evs]
            if "done" not in names:
                problems.append(f"{kind} N={n}: the simulator did not finish")
            if not args.check:
                continue
            for e in evs:
                ev = e.get("event")
                if ev == "connected" and e["tracked"] != n:
                    problems.append(f"{kind} N={n}: {e['tracked']} vehicles tracked")
                if ev == "step_end" and (e["barrier_answered"] != e["barrier_asked"] or e["sent"] == 0 or e["rtt"]["n"] == 0):
                    problems.append(f"{kind} N={n}: step {e['rate']}/s incomplete: {json.dumps(e)}")
                if ev == "detect" and (e["service_out_missing"] or e["service_in_missing"] or e["silent"] == 0):
                    problems.append(f"{kind} N={n}: detection incomplete: {json.dumps(e)}")
                if ev == "storm" and e.get("tracked") != n:
                    problems.append(f"{kind} N={n}: storm incomplete: {json.dumps(e)}")
            if args.check and "step_end" not in names:
                problems.append(f"{kind} N={n}: no heartbeat step ran")
            unlocks = [e for e in evs if e.get("event") == "unlock_step_end"]
            if args.check and args.unlocks:
                if not unlocks:
                    problems.append(f"{kind} N={n}: no unlock step ran")
                sent = sum(e["backend"]["sent"] for e in unlocks)
                ok = sum(e["backend"]["ok"] for e in unlocks)
                if sent == 0 or ok != sent:
                    problems.append(f"{kind} N={n}: unlocks sent {sent}, answered ok {ok}")
                tracked = unlocks[-1].get("broker_journey_requests") if unlocks else None
                if kind != "mosquitto" and tracked != sent:
                    problems.append(f"{kind} N={n}: the broker tracked {tracked} unlock requests of {sent}")
    for p_ in problems:
        log(f"PROBLEM: {p_}")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
