//! The daemon's Prometheus metrics: names (prefix `smart_task_`, base units), explicit histogram buckets,
//! and the recording points. Labels are bounded: task ids and reason codes come from the loaded catalogue,
//! outcomes and kinds from closed sets; never personal data.

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::domain::closing::{ClaimedRequest, Evaluation, Fate};
use crate::rules::RuleSet;
use crate::store::QueueCounts;

pub const REQUESTS: &str = "smart_task_requests";
pub const OLDEST_OPEN_AGE: &str = "smart_task_oldest_open_request_age_seconds";
pub const QUEUE_WAIT: &str = "smart_task_queue_wait_seconds";
pub const DECISION_DURATION: &str = "smart_task_decision_duration_seconds";
pub const DECISIONS: &str = "smart_task_decisions_total";
pub const REASONS: &str = "smart_task_reasons_total";
pub const RULE_FAILURES: &str = "smart_task_rule_failures_total";
pub const RULE_INFO: &str = "smart_task_rule_info";
pub const RULE_RELOADS: &str = "smart_task_rule_reloads_total";
pub const RULES_FALLBACK: &str = "smart_task_rules_fallback";
pub const SHADOW_DISAGREEMENTS: &str = "smart_task_shadow_disagreements_total";
pub const CONFLICTS: &str = "smart_task_redecisions_total";
pub const TAKEOVERS: &str = "smart_task_lease_takeovers_total";
pub const NOTIFICATIONS: &str = "smart_task_notifications_total";
pub const NOTIFICATIONS_DEAD: &str = "smart_task_notifications_dead";
pub const REFERRED: &str = "smart_task_referred_requests";
pub const CRON_RUNS: &str = "smart_task_cron_runs_total";
pub const CRON_LAST_SUCCESS: &str = "smart_task_cron_last_success_timestamp_seconds";
pub const BUILD_INFO: &str = "smart_task_build_info";
pub const PROCESS_RSS: &str = "process_resident_memory_bytes";
pub const PROCESS_CPU: &str = "process_cpu_seconds_total";
pub const PROCESS_START: &str = "process_start_time_seconds";

/// Installs the global recorder with explicit buckets; returns the handle `/metrics` renders.
pub fn install() -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(QUEUE_WAIT.into()),
            &[0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0],
        )?
        .set_buckets_for_metric(
            Matcher::Full(DECISION_DURATION.into()),
            &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25],
        )?
        .install_recorder()
}

/// Series that must exist from the start (a counter appears only once touched): zero for every task and
/// outcome of the loaded rules, and the build info.
pub fn initialise(rules: &RuleSet, instance: &str) {
    // `instance_name`, not `instance`: Prometheus sets `instance` to the scrape target.
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "instance_name" => instance.to_string()).set(1.0);
    for task in rules.tasks.keys() {
        for outcome in ["accolta", "non_accolta", "rinvio"] {
            counter!(DECISIONS, "task" => task.clone(), "outcome" => outcome).absolute(0);
        }
        for kind in ["error", "timeout", "budget", "no_rule", "database"] {
            counter!(RULE_FAILURES, "task" => task.clone(), "kind" => kind).absolute(0);
        }
        if let Some(code) = rules.tasks[task].reasons.keys().next() {
            counter!(REASONS, "task" => task.clone(), "code" => code.clone()).absolute(0);
        }
        counter!(SHADOW_DISAGREEMENTS, "task" => task.clone()).absolute(0);
    }
    for outcome in ["activated", "refused"] {
        counter!(RULE_RELOADS, "outcome" => outcome).absolute(0);
    }
    for channel in ["email", "sms"] {
        for outcome in ["sent", "retried", "failed", "dead"] {
            counter!(NOTIFICATIONS, "channel" => channel, "outcome" => outcome).absolute(0);
        }
    }
    counter!(CONFLICTS).absolute(0);
    counter!(TAKEOVERS).absolute(0);
    rule_versions(rules, None);
}

/// `smart_task_rule_info{task, version} 1` for the active versions (0 for the ones they replaced).
pub fn rule_versions(active: &RuleSet, previous: Option<&std::collections::BTreeMap<String, String>>) {
    for (task, version) in previous.into_iter().flatten() {
        gauge!(RULE_INFO, "task" => task.clone(), "version" => version.clone()).set(0.0);
    }
    for r in active.tasks.values() {
        gauge!(RULE_INFO, "task" => r.id.clone(), "version" => r.version.clone()).set(1.0);
    }
}

/// 1 while the daemon runs the last activated rule set because its rules directory was refused at start.
pub fn rules_fallback(active: bool) {
    gauge!(RULES_FALLBACK).set(if active { 1.0 } else { 0.0 });
}

/// A reload's outcome.
pub fn reload(activated: bool) {
    counter!(RULE_RELOADS, "outcome" => if activated { "activated" } else { "refused" }).increment(1);
}

/// A claimed batch: queue wait of first claims, takeovers.
pub fn claimed(batch: &[ClaimedRequest], now: i64) {
    for r in batch.iter().filter(|r| r.token == 1) {
        histogram!(QUEUE_WAIT).record((now - r.creata_il).max(0) as f64 / 1000.0);
    }
    let taken = batch.iter().filter(|r| r.taken_over).count();
    if taken > 0 {
        counter!(TAKEOVERS).increment(taken as u64);
    }
}

/// A closed batch: decisions by task and outcome, reasons by code, rule failures, durations, re-decisions.
pub fn closed(evaluated: &[(ClaimedRequest, Evaluation)], fates: &[(i64, Fate)]) {
    for ((req, eval), (_, fate)) in evaluated.iter().zip(fates) {
        match (eval, fate) {
            (Evaluation::Decided(d), Fate::Closed(_) | Fate::Referred) => {
                counter!(DECISIONS, "task" => req.task.clone(), "outcome" => d.outcome.as_str()).increment(1);
                histogram!(DECISION_DURATION, "task" => req.task.clone()).record(d.duration_us as f64 / 1e6);
                for r in &d.reasons {
                    counter!(REASONS, "task" => req.task.clone(), "code" => r.codice.clone()).increment(1);
                }
                if d.trace.shadow.as_ref().is_some_and(|s| s.disagrees) {
                    counter!(SHADOW_DISAGREEMENTS, "task" => req.task.clone()).increment(1);
                }
            }
            (Evaluation::Failed(f), Fate::Retried | Fate::Parked) => {
                counter!(RULE_FAILURES, "task" => req.task.clone(), "kind" => f.kind.as_str()).increment(1);
            }
            (_, Fate::Conflict) => counter!(CONFLICTS).increment(1),
            _ => {}
        }
    }
}

/// Queue gauges, sampled from the store.
pub fn queue(counts: &QueueCounts, oldest_open_age_s: f64, dead_notifications: i64, sla_warning: i64, sla_breach: i64) {
    gauge!(REQUESTS, "stato" => "aperta").set(counts.aperte as f64);
    gauge!(REQUESTS, "stato" => "in_carico").set(counts.in_carico as f64);
    gauge!(REQUESTS, "stato" => "chiusa").set(counts.chiuse as f64);
    gauge!(REQUESTS, "stato" => "sospesa").set(counts.sospese as f64);
    gauge!(OLDEST_OPEN_AGE).set(oldest_open_age_s);
    gauge!(NOTIFICATIONS_DEAD).set(dead_notifications as f64);
    gauge!(REFERRED, "level" => "warning").set(sla_warning as f64);
    gauge!(REFERRED, "level" => "breach").set(sla_breach as f64);
}

/// A cron job run.
pub fn cron_run(job: &str, ok: bool, now_s: f64) {
    counter!(CRON_RUNS, "cron_job" => job.to_string(), "outcome" => if ok { "success" } else { "failure" })
        .increment(1);
    if ok {
        gauge!(CRON_LAST_SUCCESS, "cron_job" => job.to_string()).set(now_s);
    }
}

/// Process metrics from /proc (Linux).
pub fn process() {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status")
        && let Some(kib) = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
    {
        gauge!(PROCESS_RSS).set(kib * 1024.0);
    }
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat")
        && let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r)
    {
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // Fields after the command: utime and stime are the 12th and 13th, in clock ticks (100 Hz on Linux).
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        gauge!(PROCESS_CPU).set((ticks(11) + ticks(12)) / 100.0);
    }
}

/// The process start time, set once.
pub fn started(now_s: f64) {
    gauge!(PROCESS_START).set(now_s);
}
