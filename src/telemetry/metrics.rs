//! The daemon's Prometheus metrics: names (prefix `smart_task_`, base units), explicit histogram buckets,
//! and the recording points. Labels are bounded: task ids and reason codes come from the loaded catalogue,
//! outcomes and kinds from closed sets; never personal data.

use std::sync::OnceLock;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::domain::closing::{ClaimedRequest, Evaluation, Fate};
use crate::store::OpsSnapshot;

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
pub const CONFIG_RELOADS: &str = "smart_task_config_reloads_total";
pub const SHADOW_DISAGREEMENTS: &str = "smart_task_shadow_disagreements_total";
pub const CONFLICTS: &str = "smart_task_redecisions_total";
pub const TAKEOVERS: &str = "smart_task_lease_takeovers_total";
pub const NOTIFICATIONS: &str = "smart_task_notifications_total";
pub const WEBHOOK_DELIVERIES: &str = "smart_task_webhook_deliveries_total";
pub const NOTIFICATIONS_DEAD: &str = "smart_task_notifications_dead";
pub const NOTIFICATIONS_PENDING: &str = "smart_task_notifications_pending";
pub const OLDEST_PENDING_NOTIFICATION_AGE: &str = "smart_task_oldest_pending_notification_age_seconds";
pub const REFERRED: &str = "smart_task_referred_requests";
pub const CRON_RUNS: &str = "smart_task_cron_runs_total";
pub const CRON_LAST_SUCCESS: &str = "smart_task_cron_last_success_timestamp_seconds";
pub const BUILD_INFO: &str = "smart_task_build_info";
pub const HTTP_DURATION: &str = "smart_task_http_request_duration_seconds";
pub const QUESTIONNAIRE_ANSWERS: &str = "smart_task_questionario_risposte";
pub const QUESTIONNAIRE_VALUES: &str = "smart_task_questionario_valori";

/// The states of `smart_task_requests`: a partition of the requests (they sum to the total). `in_carico` is
/// claimed and being decided (or waiting for a retry); `rinviata` and `sospesa` are `in_carico` requests
/// waiting for an operator, referred by their rule (GEN-05) or parked after `max_failures` rule failures.
pub const REQUEST_STATES: [&str; 5] = ["aperta", "in_carico", "rinviata", "sospesa", "chiusa"];
const DECISION_OUTCOMES: [&str; 3] = ["accolta", "non_accolta", "rinvio"];
const FAILURE_KINDS: [&str; 5] = ["error", "timeout", "budget", "no_rule", "database"];
const CHANNELS: [&str; 2] = ["email", "sms"];
const NOTIFICATION_OUTCOMES: [&str; 4] = ["sent", "retried", "failed", "dead"];
/// The outcomes of a webhook delivery attempt.
pub const WEBHOOK_OUTCOMES: [&str; 3] = ["delivered", "retried", "dead"];

/// Every metric family the daemon registers, with the text of its `# HELP` line.
const FAMILIES: &[(&str, Kind, &str)] = &[
    (
        REQUESTS,
        Kind::Gauge,
        "Requests by state (aperta, in_carico, rinviata, sospesa, chiusa); the states partition the requests.",
    ),
    (
        OLDEST_OPEN_AGE,
        Kind::Gauge,
        "Age of the oldest request waiting for the rules (aperta, or in_carico and not with an operator); 0 when none.",
    ),
    (QUEUE_WAIT, Kind::Histogram, "Time from protocollazione to the first claim by a worker."),
    (DECISION_DURATION, Kind::Histogram, "Time a rule took to decide a request, by task."),
    (DECISIONS, Kind::Counter, "Decisions recorded, by task and outcome (accolta, non_accolta, rinvio)."),
    (REASONS, Kind::Counter, "Reasons given in decisions, by task and reason code."),
    (
        RULE_FAILURES,
        Kind::Counter,
        "Rule evaluations that failed, by task and kind (error, timeout, budget, no_rule, database).",
    ),
    (RULE_INFO, Kind::Gauge, "1 for the active version of each task's rule, 0 for the versions it replaced."),
    (
        RULE_RELOADS,
        Kind::Counter,
        "Rule set reloads (SIGHUP or an edit of the rules directory), by outcome (activated, refused).",
    ),
    (
        RULES_FALLBACK,
        Kind::Gauge,
        "1 while the daemon runs the last activated rule set because its rules directory was refused at start.",
    ),
    (CONFIG_RELOADS, Kind::Counter, "Configuration re-reads on SIGHUP, by outcome (applied, refused)."),
    (SHADOW_DISAGREEMENTS, Kind::Counter, "Decisions where the shadow rule disagreed with the active one, by task."),
    (
        CONFLICTS,
        Kind::Counter,
        "Decisions discarded at close because a fact they read changed; the request is decided again.",
    ),
    (TAKEOVERS, Kind::Counter, "Requests claimed after another worker's lease expired."),
    (NOTIFICATIONS, Kind::Counter, "Notification send attempts, by channel and outcome (sent, retried, failed, dead)."),
    (
        WEBHOOK_DELIVERIES,
        Kind::Counter,
        "Webhook delivery attempts, by outcome (delivered, retried, dead: given up after webhooks.max_attempts).",
    ),
    (NOTIFICATIONS_DEAD, Kind::Gauge, "Notifications that exhausted their retries (dead) and are not resent."),
    (NOTIFICATIONS_PENDING, Kind::Gauge, "Notifications waiting to be sent (due now or waiting for a retry)."),
    (OLDEST_PENDING_NOTIFICATION_AGE, Kind::Gauge, "Age of the oldest notification waiting to be sent; 0 when none."),
    (
        REFERRED,
        Kind::Gauge,
        "Requests referred to an operator for 20 to 30 days (level warning) and 30 days or more (level breach).",
    ),
    (CRON_RUNS, Kind::Counter, "Runs of the cron jobs, by job and outcome (success, failure)."),
    (CRON_LAST_SUCCESS, Kind::Gauge, "Unix time of each cron job's last successful run."),
    (BUILD_INFO, Kind::Gauge, "1, labelled with the daemon's version and instance name."),
    (
        QUESTIONNAIRE_ANSWERS,
        Kind::Gauge,
        "Questionnaire answer sets by task, requester category and month (this month and the last; groups below \
         questionario.gruppo_minimo are not shown).",
    ),
    (
        QUESTIONNAIRE_VALUES,
        Kind::Gauge,
        "Questionnaire answers by task, requester category, month, question and value given (the same groups).",
    ),
    (
        HTTP_DURATION,
        Kind::Histogram,
        "Time to answer an HTTP call, by route template, method and status class (2xx, 4xx, 5xx).",
    ),
];

#[derive(Debug, Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Installs the global recorder with explicit buckets and describes every family (so each has `# HELP`);
/// returns the handle `/metrics` renders.
pub fn install() -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(QUEUE_WAIT.into()),
            &[0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0],
        )?
        .set_buckets_for_metric(
            Matcher::Full(HTTP_DURATION.into()),
            &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0],
        )?
        .set_buckets_for_metric(
            Matcher::Full(DECISION_DURATION.into()),
            &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25],
        )?
        .install_recorder()?;
    for &(name, kind, help) in FAMILIES {
        match kind {
            Kind::Counter => describe_counter!(name, help),
            Kind::Gauge => describe_gauge!(name, help),
            Kind::Histogram => describe_histogram!(name, help),
        }
    }
    Ok(handle)
}

/// Series that must exist from the start, at zero (a series appears only once touched, and `increase()`
/// misses the first events of a series that appears with them): every task, outcome, failure kind and
/// reason code of the loaded rules, the decision-duration histogram of every task, the queue-wait
/// histogram, reloads, notifications, and the build info.
pub fn initialise(rules: &[ActiveTask<'_>], instance: &str) {
    // `instance_name`, not `instance`: Prometheus sets `instance` to the scrape target.
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "instance_name" => instance.to_string()).set(1.0);
    for outcome in ["activated", "refused"] {
        counter!(RULE_RELOADS, "outcome" => outcome).increment(0);
    }
    for outcome in ["applied", "refused"] {
        counter!(CONFIG_RELOADS, "outcome" => outcome).increment(0);
    }
    for channel in CHANNELS {
        for outcome in NOTIFICATION_OUTCOMES {
            counter!(NOTIFICATIONS, "channel" => channel, "outcome" => outcome).increment(0);
        }
    }
    for outcome in WEBHOOK_OUTCOMES {
        counter!(WEBHOOK_DELIVERIES, "outcome" => outcome).increment(0);
    }
    counter!(CONFLICTS).increment(0);
    counter!(TAKEOVERS).increment(0);
    let _ = histogram!(QUEUE_WAIT);
    rules_activated(rules, None);
}

/// What the metrics know of an active rule set: per task, its version and the reason codes it may give.
#[derive(Debug, Clone)]
pub struct ActiveTask<'a> {
    pub task: &'a str,
    pub version: &'a str,
    pub reason_codes: Vec<&'a str>,
}

/// A rule set went live (at start or by a reload): its tasks' series at zero (a task a reload added gets
/// them too), and `smart_task_rule_info{task, version} 1` for the active versions (0 for the ones they
/// replaced).
pub fn rules_activated(active: &[ActiveTask<'_>], previous: Option<&std::collections::BTreeMap<String, String>>) {
    for rule in active {
        let task = rule.task.to_string();
        for outcome in DECISION_OUTCOMES {
            counter!(DECISIONS, "task" => task.clone(), "outcome" => outcome).increment(0);
        }
        for kind in FAILURE_KINDS {
            counter!(RULE_FAILURES, "task" => task.clone(), "kind" => kind).increment(0);
        }
        for code in &rule.reason_codes {
            counter!(REASONS, "task" => task.clone(), "code" => code.to_string()).increment(0);
        }
        counter!(SHADOW_DISAGREEMENTS, "task" => task.clone()).increment(0);
        let _ = histogram!(DECISION_DURATION, "task" => task);
    }
    for (task, version) in previous.into_iter().flatten() {
        gauge!(RULE_INFO, "task" => task.clone(), "version" => version.clone()).set(0.0);
    }
    for r in active {
        gauge!(RULE_INFO, "task" => r.task.to_string(), "version" => r.version.to_string()).set(1.0);
    }
}

/// An HTTP call answered: `route` is the matched template (`/rest/…/richieste/{id}`), never the path.
pub fn http_answered(route: &str, method: &str, status: u16, seconds: f64) {
    let class = match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    histogram!(HTTP_DURATION, "route" => route.to_string(), "method" => method.to_string(), "status" => class)
        .record(seconds);
}

/// 1 while the daemon runs the last activated rule set because its rules directory was refused at start.
pub fn rules_fallback(active: bool) {
    gauge!(RULES_FALLBACK).set(if active { 1.0 } else { 0.0 });
}

/// The cron jobs the scheduler runs, their run counters at zero.
pub fn cron_jobs<'a>(names: impl IntoIterator<Item = &'a str>) {
    for job in names {
        for outcome in ["success", "failure"] {
            counter!(CRON_RUNS, "cron_job" => job.to_string(), "outcome" => outcome).increment(0);
        }
    }
}

/// A configuration re-read's outcome (SIGHUP).
pub fn config_reload(applied: bool) {
    counter!(CONFIG_RELOADS, "outcome" => if applied { "applied" } else { "refused" }).increment(1);
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

/// Queue gauges, sampled from the store. The request states partition the requests: parked ones (referred
/// or suspended after failures) are counted under `rinviata` or `sospesa`, not also under `in_carico`.
pub fn queue(s: &OpsSnapshot) {
    let c = &s.counts;
    let suspended = c.sospese - s.referred;
    for (stato, n) in
        REQUEST_STATES.into_iter().zip([c.aperte, c.in_carico - c.sospese, s.referred, suspended, c.chiuse])
    {
        gauge!(REQUESTS, "stato" => stato).set(n as f64);
    }
    gauge!(OLDEST_OPEN_AGE).set(s.oldest_open_age_s);
    gauge!(NOTIFICATIONS_DEAD).set(s.dead_notifications as f64);
    gauge!(NOTIFICATIONS_PENDING).set(s.pending_notifications as f64);
    gauge!(OLDEST_PENDING_NOTIFICATION_AGE).set(s.oldest_pending_notification_age_s);
    gauge!(REFERRED, "level" => "warning").set(s.sla_warning as f64);
    gauge!(REFERRED, "level" => "breach").set(s.sla_breach as f64);
}

/// One questionnaire group's gauges: its answer sets and, per question, the count of each value. Only groups
/// at least `gruppo_minimo` large are passed (the caller's aggregate withholds the others).
pub fn questionnaire_group(
    task: &str,
    categoria: &str,
    mese: &str,
    risposte: u64,
    domande: &std::collections::BTreeMap<String, std::collections::BTreeMap<String, u64>>,
) {
    let labels = [("task", task.to_string()), ("categoria", categoria.to_string()), ("mese", mese.to_string())];
    gauge!(QUESTIONNAIRE_ANSWERS, &labels).set(risposte as f64);
    for (domanda, valori) in domande {
        for (valore, n) in valori {
            let mut labels = labels.to_vec();
            labels.push(("domanda", domanda.clone()));
            labels.push(("valore", valore.clone()));
            gauge!(QUESTIONNAIRE_VALUES, &labels).set(*n as f64);
        }
    }
}

/// A cron job run.
pub fn cron_run(job: &str, ok: bool, now_s: f64) {
    counter!(CRON_RUNS, "cron_job" => job.to_string(), "outcome" => if ok { "success" } else { "failure" })
        .increment(1);
    if ok {
        gauge!(CRON_LAST_SUCCESS, "cron_job" => job.to_string()).set(now_s);
    }
}

/// The process start time (unix seconds), set once at start.
static STARTED: OnceLock<f64> = OnceLock::new();

/// Records the process start time.
pub fn started(now_s: f64) {
    let _ = STARTED.set(now_s);
}

/// The standard process families (Prometheus client conventions), read from /proc (Linux) at each scrape
/// and written in the text format, with `# HELP` and the right `# TYPE`: the CPU time is a counter, which
/// the `metrics` crate cannot express (its counters are integers). A value /proc does not give is left out.
pub fn process_families() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map(|k| k * 1024.0)
    };
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command (which may hold spaces): utime and stime are the 12th and 13th, in clock
    // ticks (USER_HZ, 100 on Linux).
    let fields: Vec<&str> = stat.rsplit_once(')').map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    let cpu = ticks(11).zip(ticks(12)).map(|(u, s)| (u + s) / 100.0);
    let open_fds = std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as f64);
    let max_fds = std::fs::read_to_string("/proc/self/limits").ok().and_then(|l| {
        l.lines()
            .find_map(|l| l.strip_prefix("Max open files"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
    });
    let families = [
        ("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.", cpu),
        ("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", kib("VmRSS:")),
        ("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", kib("VmSize:")),
        ("process_open_fds", "gauge", "Number of open file descriptors.", open_fds),
        ("process_max_fds", "gauge", "Maximum number of open file descriptors.", max_fds),
        (
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            STARTED.get().copied(),
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, value) in families {
        if let Some(v) = value {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n\n"));
        }
    }
    out
}
