"""Side-by-side backtest benchmark: `ztraded backtest` against backtesting.py 0.6.6.

Both run the same strategy on the same bars: an SMA 10/20 cross on one symbol of one-minute
bars, long only, entries when the 10-bar mean crosses above the 20-bar mean, exits when it
crosses back below, market orders filled at the next bar's open, no slippage, no commission.

Subcommands (called by scripts/bench-backtest):

  gen DIR BARS        writes DIR/data/SYN.csv (Date,Time,Open,High,Low,Close,Volume) and the
                      config directory DIR (ztraded.toml, pipelines/sma-cross.yaml,
                      risk/bench.yaml)
  run DIR BIN RUNS    times RUNS runs of `BIN backtest DIR/pipelines/sma-cross.yaml --out ...`
                      from process start to exit (files written, pinned to CPU 0 when
                      taskset exists) and RUNS runs of backtesting.py on the same CSV
                      (read_csv + Backtest.run, imports excluded), interleaved, and prints
                      bars/s, the ratio and the trade counts of both

The bars are a deterministic random walk (xorshift64), so every run of the script measures the
same data.
"""

import csv
import os
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime, timedelta

PIPELINE = """\
description: SMA 10/20 cross on one-minute bars (benchmark)
mode: simulation
broker: sim
symbols: [SYN]
risk: bench
trigger:
  bar_close: { timeframe: 1m }
nodes:
  - id: data
    agent: market_data
    config: { timeframes: [1m], indicators: [sma_10, sma_20], lookback: 50 }
  - id: strategy
    agent: strategy
    config:
      kind: rules
      timeframe: 1m
      long_entry: "crossed_above(sma_10, sma_20)"
      long_exit: "crossed_below(sma_10, sma_20)"
  - id: risk
    agent: risk_manager
  - id: trade
    agent: trade_manager
"""

# Every signal trades: no stop required, no reward/risk or margin rule, sized by
# max_position_pct alone (50 % of equity, whole shares), no capital cap below that.
RISK = """\
description: Lets every signal of the benchmark trade
sizing: { max_position_pct: 50 }
limits: { max_pipeline_capital_pct: 100, max_deployed_pct: 100 }
trade: { require_stop_loss: false, min_reward_risk: 0, min_profit_margin_pct: 0 }
"""

SETTINGS = """\
[market_data]
path = "data"
timezone = "UTC"

[brokers.sim]
kind = "simulated"
initial_balance = 100000
slippage_pct = 0
commission_per_share = 0
"""

CASH = 100_000
SIZE = 0.5


def generate(root, bars):
    for sub in ("data", "pipelines", "risk"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    with open(os.path.join(root, "ztraded.toml"), "w") as f:
        f.write(SETTINGS)
    with open(os.path.join(root, "pipelines", "sma-cross.yaml"), "w") as f:
        f.write(PIPELINE)
    with open(os.path.join(root, "risk", "bench.yaml"), "w") as f:
        f.write(RISK)
    mask = (1 << 64) - 1
    x = 0x9E3779B97F4A7C15
    price = 100.0
    t = datetime(2010, 1, 4)
    minute = timedelta(minutes=1)
    lines = ["Date,Time,Open,High,Low,Close,Volume\n"]
    for _ in range(bars):
        x ^= (x << 13) & mask
        x ^= x >> 7
        x ^= (x << 17) & mask
        r = ((x % 2001) - 1000.0) / 1000.0 * 0.002
        o = price
        c = max(price * (1.0 + r), 1.0)
        h = max(o, c) * 1.0005
        lo = min(o, c) * 0.9995
        lines.append(
            f"{t:%Y-%m-%d},{t:%H:%M:%S},{o:.4f},{h:.4f},{lo:.4f},{c:.4f},{1000 + x % 5000}\n"
        )
        # The next bar opens at this bar's rounded close, as a real feed would.
        price = round(c, 4)
        t += minute
    with open(os.path.join(root, "data", "SYN.csv"), "w") as f:
        f.writelines(lines)


def pinned(cmd):
    """The command on CPU 0 when taskset exists (one core, as the target is stated)."""
    if shutil.which("taskset"):
        return ["taskset", "-c", "0"] + cmd
    return cmd


def ztraded_once(root, binary):
    """One `ztraded backtest`, timed from process start to exit (files written)."""
    out = os.path.join(root, "out")
    shutil.rmtree(out, ignore_errors=True)
    cmd = pinned([binary, "backtest", os.path.join(root, "pipelines", "sma-cross.yaml"),
                  "--out", out])
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"ztraded backtest failed ({proc.returncode}):\n{proc.stderr}")
    return took, proc.stdout


def ztraded_files(root):
    out = os.path.join(root, "out")
    with open(os.path.join(out, "trades.csv")) as f:
        trades = sum(1 for _ in f) - 1
    sizes = {name: os.path.getsize(os.path.join(out, name))
             for name in ("trades.csv", "equity.csv", "equity.svg")}
    return trades, sizes


def backtesting_py(root):
    """A function running backtesting.py once on the bars: (seconds, trades)."""
    import pandas as pd
    from backtesting import Backtest, Strategy

    def sma(values, n):
        return pd.Series(values).rolling(n).mean().to_numpy()

    class SmaCross(Strategy):
        def init(self):
            self.fast = self.I(sma, self.data.Close, 10)
            self.slow = self.I(sma, self.data.Close, 20)

        def next(self):
            f0, f1 = self.fast[-2], self.fast[-1]
            s0, s1 = self.slow[-2], self.slow[-1]
            # ztraded's crossed_above(a, b): a <= b on the previous bar and a > b now.
            if f0 <= s0 and f1 > s1:
                if not self.position:
                    self.buy(size=SIZE)
            elif f0 >= s0 and f1 < s1:
                if self.position:
                    self.position.close()

    path = os.path.join(root, "data", "SYN.csv")

    def once():
        start = time.perf_counter()
        df = pd.read_csv(path)
        df.index = pd.to_datetime(df.pop("Date") + " " + df.pop("Time"))
        bt = Backtest(df, SmaCross, cash=CASH, commission=0.0, trade_on_close=False,
                      exclusive_orders=False)
        stats = bt.run()
        return time.perf_counter() - start, int(stats["# Trades"])

    return once


def run(root, binary, runs):
    import backtesting

    with open(os.path.join(root, "data", "SYN.csv")) as f:
        bars = sum(1 for _ in csv.reader(f)) - 1
    bt_once = backtesting_py(root)
    zt, bp = [], []
    summary, bp_trades = "", 0
    # Interleaved, so that a change in the machine's load hits both sides alike.
    for _ in range(runs):
        took, summary = ztraded_once(root, binary)
        zt.append(took)
        took, bp_trades = bt_once()
        bp.append(took)
    zt_trades, sizes = ztraded_files(root)
    zbest, bbest = min(zt), min(bp)
    zmed, bmed = statistics.median(zt), statistics.median(bp)
    print(f"bars: {bars:,} one-minute bars of SYN, SMA 10/20 cross, long only, "
          f"next-open market fills, no costs; {runs} interleaved runs each")
    print(f"ztraded backtest (process start to exit, files written, 1 core): "
          f"best {zbest:.3f} s = {bars / zbest:,.0f} bars/s, "
          f"median {zmed:.3f} s = {bars / zmed:,.0f} bars/s")
    print(f"backtesting.py {backtesting.__version__} (read_csv + Backtest.run): "
          f"best {bbest:.3f} s = {bars / bbest:,.0f} bars/s, "
          f"median {bmed:.3f} s = {bars / bmed:,.0f} bars/s")
    print(f"ratio: ztraded is {bbest / zbest:.1f}x faster (best / best), "
          f"{bmed / zmed:.1f}x (median / median)")
    print(f"trades: ztraded {zt_trades} closed (trades.csv), backtesting.py {bp_trades}")
    print("files: " + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in sizes.items()))
    if os.environ.get("BENCH_SUMMARY"):
        print(summary, end="")


def main(argv):
    if len(argv) == 3 and argv[0] == "gen":
        generate(argv[1], int(argv[2]))
    elif len(argv) == 4 and argv[0] == "run":
        run(argv[1], argv[2], int(argv[3]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
