//! The `schedule` section: the cron jobs, each a 5-field crontab expression in a time zone.

use std::str::FromStr;

use chrono_tz::Tz;
use croner::Cron;
use serde::Deserialize;

/// A cron job: a standard 5-field crontab expression in a time zone.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    pub cron: String,
    /// Default: `schedule.time_zone`.
    #[serde(default)]
    pub time_zone: Option<String>,
    #[serde(default = "enabled")]
    pub enabled: bool,
}

fn enabled() -> bool {
    true
}

/// The retention purge: off by default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    pub cron: String,
    #[serde(default)]
    pub time_zone: Option<String>,
    #[serde(default)]
    pub enabled: bool,
    /// Closed requests older than this are deleted with their history.
    pub older_than_days: u32,
}

impl RetentionConfig {
    /// Its schedule, as any other job's.
    pub fn job(&self) -> JobConfig {
        JobConfig { cron: self.cron.clone(), time_zone: self.time_zone.clone(), enabled: self.enabled }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleConfig {
    /// Time zone of the jobs that do not name one.
    pub time_zone: String,
    pub lease_reaper: JobConfig,
    pub sla_escalation: JobConfig,
    pub retention_purge: RetentionConfig,
    pub daily_summary: SummaryConfig,
}

/// The daily summary e-mailed to an operations address: off by default; needs `notify.email`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SummaryConfig {
    pub cron: String,
    #[serde(default)]
    pub time_zone: Option<String>,
    #[serde(default)]
    pub enabled: bool,
    /// The operations address.
    #[serde(default)]
    pub to: Option<String>,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            time_zone: "Europe/Rome".into(),
            lease_reaper: JobConfig { cron: "* * * * *".into(), time_zone: None, enabled: true },
            sla_escalation: JobConfig { cron: "0 7 * * *".into(), time_zone: None, enabled: true },
            retention_purge: RetentionConfig {
                cron: "30 2 * * *".into(),
                time_zone: None,
                enabled: false,
                older_than_days: 3650,
            },
            daily_summary: SummaryConfig { cron: "0 8 * * *".into(), time_zone: None, enabled: false, to: None },
        }
    }
}

/// What is wrong with a job's schedule.
#[derive(Debug, thiserror::Error)]
pub enum CronError {
    #[error("`{cron}` is not a 5-field crontab expression ({error})")]
    Cron { cron: String, error: croner::errors::CronError },
    #[error("`{0}` is not a time zone (e.g. Europe/Rome)")]
    TimeZone(String),
}

/// A job's schedule that does not parse, naming its key (`schedule.lease_reaper: ...`).
#[derive(Debug, thiserror::Error)]
pub enum ScheduleProblem {
    #[error("schedule.{name}: {error}")]
    Job { name: &'static str, error: CronError },
    #[error("schedule.daily_summary: `to` must be the e-mail address of the operations team")]
    SummaryRecipient,
}

/// Parses a job's schedule; the error names what is wrong.
pub fn parse_schedule(cron: &str, tz: &str) -> Result<(Cron, Tz), CronError> {
    let c = Cron::from_str(cron).map_err(|error| CronError::Cron { cron: cron.into(), error })?;
    let z = Tz::from_str(tz).map_err(|_| CronError::TimeZone(tz.into()))?;
    Ok((c, z))
}

/// The job that does something (`schedule` names it by its key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    LeaseReaper,
    SlaEscalation,
    RetentionPurge { older_than_days: u32 },
    DailySummary,
}

/// An enabled job, its schedule parsed.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// Its key in `schedule` (`lease_reaper`, …): the job's name in logs, metrics and the database.
    pub name: &'static str,
    pub kind: JobKind,
    pub cron: Cron,
    pub tz: Tz,
}

impl JobSpec {
    /// The first scheduled instant strictly after `after` (unix milliseconds).
    pub fn next_after(&self, after: i64) -> Option<i64> {
        use chrono::{TimeZone, Utc};
        let at = self.tz.timestamp_millis_opt(after).single()?;
        self.cron.find_next_occurrence(&at, false).ok().map(|t| t.with_timezone(&Utc).timestamp_millis())
    }
}

impl ScheduleConfig {
    /// The enabled jobs with their parsed schedules, or the first one that does not parse.
    pub fn jobs(&self) -> Result<Vec<JobSpec>, ScheduleProblem> {
        let summary = &self.daily_summary;
        if summary.enabled && summary.to.as_deref().and_then(crate::domain::validators::email).is_none() {
            return Err(ScheduleProblem::SummaryRecipient);
        }
        let summary_job =
            JobConfig { cron: summary.cron.clone(), time_zone: summary.time_zone.clone(), enabled: summary.enabled };
        let retention = &self.retention_purge;
        let all = [
            ("lease_reaper", self.lease_reaper.clone(), JobKind::LeaseReaper),
            ("sla_escalation", self.sla_escalation.clone(), JobKind::SlaEscalation),
            (
                "retention_purge",
                retention.job(),
                JobKind::RetentionPurge { older_than_days: retention.older_than_days },
            ),
            ("daily_summary", summary_job, JobKind::DailySummary),
        ];
        let mut out = Vec::new();
        for (name, job, kind) in all.into_iter().filter(|(_, job, _)| job.enabled) {
            let (cron, tz) = parse_schedule(&job.cron, job.time_zone.as_deref().unwrap_or(&self.time_zone))
                .map_err(|error| ScheduleProblem::Job { name, error })?;
            out.push(JobSpec { name, kind, cron, tz });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_errors_name_the_job_and_the_value() {
        assert_eq!(
            parse_schedule("0 3 * *", "UTC").unwrap_err().to_string().split(" (").next(),
            Some("`0 3 * *` is not a 5-field crontab expression")
        );
        assert_eq!(
            parse_schedule("0 3 * * *", "Mars/Olympus").unwrap_err().to_string(),
            "`Mars/Olympus` is not a time zone (e.g. Europe/Rome)"
        );
        let mut config = ScheduleConfig::default();
        config.lease_reaper.time_zone = Some("X".into());
        let e = config.jobs().unwrap_err();
        assert_eq!(e.to_string(), "schedule.lease_reaper: `X` is not a time zone (e.g. Europe/Rome)");
    }
}
