//! The async-accept run's report, as markdown: the disk's sync latency
//! (the baseline), the accepts beside it, and the targets met or not.

use crate::asyncaccept::{Figures, Plan, Run};
use crate::disk::{self, DiskFigures};
use crate::report::{self, Machine};
use crate::stats::Summary;
use std::fmt::Write as _;
use std::time::Duration;

/// Brief's target: async accept p99, and accepts per second on 2 cores.
const TARGET: (Duration, f64) = (Duration::from_millis(10), 10_000.0);
/// Brief's stretch: what group commit allows on a disk that syncs in
/// 0.2 ms (p99 0.4 ms).
const STRETCH: (Duration, f64) = (Duration::from_millis(2), 50_000.0);

/// The report of `figures`, measured as `plan` says.
pub fn markdown(machine: &Machine, command: &str, plan: &Plan, figures: &Figures) -> String {
    let mut md = report::header("nimbus-bench async", machine, command);
    write(&mut md, plan, figures).expect("writing to a String cannot fail");
    md
}

fn write(md: &mut String, plan: &Plan, f: &Figures) -> std::fmt::Result {
    writeln!(
        md,
        "- data directories: fresh, under `{}`, on {}; a fresh `nimbus up` and data directory per \
         client count",
        plan.dir.display(),
        f.filesystem
    )?;
    writeln!(
        md,
        "- server: `nimbus up --async-backlog-max 1000000000 --async-retry-base-ms 3600000`; the \
         wasm echo with a reserved concurrency of 0, so the dispatcher puts each accepted \
         invocation off (due ≥ 45 s later) without an attempt: each accept also costs the \
         journal one deferral in the same run, and nothing executes"
    )?;
    writeln!(
        md,
        "- load: one thread of this process; N keep-alive HTTP/1.1 connections, one request in \
         flight each, replaying one signed `Event` invoke of the {}-byte event; {} s warm-up then \
         {} s measured",
        crate::PAYLOAD.len(),
        plan.warmup.as_secs(),
        plan.duration.as_secs()
    )?;
    write_disk(md, f)?;
    write_accepts(md, f)?;
    write_journal(md, f)?;
    write_beside(md, f)?;
    write_targets(md, f)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn write_disk(md: &mut String, f: &Figures) -> std::fmt::Result {
    writeln!(
        md,
        "\n#### The disk: one durable 4 KiB append (the baseline)\n\n\
         | when | call | samples | p50 | p99 | p99.9 | max | one sync per request, accepts/s |\n\
         |---|---|---:|---:|---:|---:|---:|---:|"
    )?;
    for (when, d) in [("before", &f.disk_before), ("after", &f.disk_after)] {
        for (call, s) in [("fdatasync", &d.fdatasync), ("fsync", &d.fsync)] {
            writeln!(
                md,
                "| {when} the load runs | write 4 KiB + {call} | {} | {} | {} | {} | {} | {:.0} |",
                s.count,
                ms(s.p50),
                ms(s.p99),
                ms(s.p999),
                ms(s.max),
                disk::one_per_sync_ceiling(s.p50)
            )?;
        }
    }
    Ok(())
}

fn write_accepts(md: &mut String, f: &Figures) -> std::fmt::Result {
    writeln!(
        md,
        "\n#### Accepts (every answer checked: a 202 after the commit)\n\n\
         | clients | accepts/s | p50 | p99 | p99.9 | max | answers | server syncs/s | accepts per sync | server CPU | load's CPU |\n\
         |---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|"
    )?;
    for r in &f.runs {
        let l = &r.latency;
        let secs = r.duration.as_secs_f64();
        let (syncs_per_s, per_sync) = match r.syncs {
            Some((data, all)) if data + all > 0 => {
                let per_s = (data + all) as f64 / secs;
                (
                    format!("{per_s:.0} ({data} fdatasync, {all} fsync)"),
                    format!("{:.1}", r.accepts_per_s() / per_s),
                )
            }
            _ => ("not counted".into(), "—".into()),
        };
        let per_accept_us = r.server_cpu.as_secs_f64() * 1e6 / l.count as f64;
        writeln!(
            md,
            "| {} | {:.0} | {} | {} | {} | {} | {} | {syncs_per_s} | {per_sync} | {:.2} cores, {per_accept_us:.0} µs/accept | {:.2} cores |",
            r.clients,
            r.accepts_per_s(),
            ms(l.p50),
            ms(l.p99),
            ms(l.p999),
            ms(l.max),
            answers(r),
            r.server_cpu.as_secs_f64() / secs,
            r.client_cpu.as_secs_f64() / secs,
        )?;
    }
    Ok(())
}

/// "all 123,456 were 202", or each status with its count.
fn answers(r: &Run) -> String {
    let total: u64 = r.seen.statuses.values().sum();
    if r.all_accepted() {
        return format!("all {total} were 202");
    }
    let each: Vec<String> = r
        .seen
        .statuses
        .iter()
        .map(|(status, n)| format!("{n}× {status}"))
        .collect();
    format!("**{}**", each.join(", "))
}

fn write_journal(md: &mut String, f: &Figures) -> std::fmt::Result {
    writeln!(
        md,
        "\n#### The dispatcher's share (read from each run's journal afterwards)\n\n\
         | clients | accepted in the window | of them put off at the limit (no attempt) | attempts started in the window |\n\
         |---:|---:|---:|---:|"
    )?;
    for r in &f.runs {
        match r.journal {
            Some((accepted, deferred, attempts)) => writeln!(
                md,
                "| {} | {accepted} | {deferred} | {attempts} |",
                r.clients
            )?,
            None => writeln!(md, "| {} | not read | | |", r.clients)?,
        }
    }
    Ok(())
}

fn write_beside(md: &mut String, f: &Figures) -> std::fmt::Result {
    let before: &DiskFigures = &f.disk_before;
    let sync: &Summary = &before.fdatasync;
    writeln!(
        md,
        "\n#### Beside the baseline (fdatasync before the load runs: p50 {}, p99 {}; one sync per \
         request allows {:.0}/s)\n\n\
         | clients | accepts/s ÷ one-sync-per-request ceiling | accept p50 ÷ sync p50 | accept p99 ÷ sync p99 |\n\
         |---:|---:|---:|---:|",
        ms(sync.p50),
        ms(sync.p99),
        disk::one_per_sync_ceiling(sync.p50)
    )?;
    for r in &f.runs {
        writeln!(
            md,
            "| {} | {:.1}× | {:.1}× | {:.1}× |",
            r.clients,
            r.accepts_per_s() / disk::one_per_sync_ceiling(sync.p50),
            r.latency.p50.as_secs_f64() / sync.p50.as_secs_f64(),
            r.latency.p99.as_secs_f64() / sync.p99.as_secs_f64(),
        )?;
    }
    Ok(())
}

fn write_targets(md: &mut String, f: &Figures) -> std::fmt::Result {
    writeln!(
        md,
        "\n#### Targets\n\n| target | clients | measured | met |\n|---|---:|---:|---|"
    )?;
    let met = |ok: bool| if ok { "yes" } else { "**no**" };
    for (name, (p99_max, _)) in [("", TARGET), ("stretch: ", STRETCH)] {
        for r in &f.runs {
            writeln!(
                md,
                "| {name}accept p99 ≤ {} | {} | {} | {} |",
                ms(p99_max),
                r.clients,
                ms(r.latency.p99),
                met(r.latency.p99 <= p99_max)
            )?;
        }
    }
    // Throughput is a property of the server: judged where it is highest.
    if let Some(best) = f
        .runs
        .iter()
        .max_by(|a, b| a.accepts_per_s().total_cmp(&b.accepts_per_s()))
    {
        for (name, (_, rate)) in [("", TARGET), ("stretch: ", STRETCH)] {
            writeln!(
                md,
                "| {name}≥ {rate:.0} accepts/s (the best client count) | {} | {:.0} | {} |",
                best.clients,
                best.accepts_per_s(),
                met(best.accepts_per_s() >= rate)
            )?;
        }
    }
    Ok(())
}
