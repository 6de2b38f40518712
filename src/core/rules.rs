//! Anomaly kinds, alert levels and the configurable thresholds of SPEC §3–§4.
//!
//! Pure data: the rules themselves are evaluated in `case.rs`, which owns the case state.

use std::fmt;

use super::calendar::DAY;

/// Alert level of an anomaly kind (ordered: warning < yellow < red).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Warning,
    Yellow,
    Red,
}

impl Level {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Warning => "warning",
            Level::Yellow => "yellow",
            Level::Red => "red",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "warning" => Some(Level::Warning),
            "yellow" => Some(Level::Yellow),
            "red" => Some(Level::Red),
            _ => None,
        }
    }

    /// The Chinese name shown to supervisors.
    pub fn chinese(self) -> &'static str {
        match self {
            Level::Warning => "预警",
            Level::Yellow => "黄牌",
            Level::Red => "红牌",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The anomaly kinds of SPEC §4 in the SPEC's order, then `supervision_overdue` (§9).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum AnomalyKind {
    DeadlineWarning,
    Overdue,
    LegalOverdue,
    OutOfLoop,
    DoubleAcceptance,
    Backfilled,
    LateAcceptance,
    Overcharge,
    SpecialProcedureOverrun,
    /// 督办超期: a supervision order's response deadline passed without a response (SPEC §9).
    SupervisionOverdue,
}

impl AnomalyKind {
    /// Number of kinds.
    pub const COUNT: usize = 10;

    /// Every kind, index = `kind as usize`.
    pub const ALL: [AnomalyKind; Self::COUNT] = [
        AnomalyKind::DeadlineWarning,
        AnomalyKind::Overdue,
        AnomalyKind::LegalOverdue,
        AnomalyKind::OutOfLoop,
        AnomalyKind::DoubleAcceptance,
        AnomalyKind::Backfilled,
        AnomalyKind::LateAcceptance,
        AnomalyKind::Overcharge,
        AnomalyKind::SpecialProcedureOverrun,
        AnomalyKind::SupervisionOverdue,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            AnomalyKind::DeadlineWarning => "deadline_warning",
            AnomalyKind::Overdue => "overdue",
            AnomalyKind::LegalOverdue => "legal_overdue",
            AnomalyKind::OutOfLoop => "out_of_loop",
            AnomalyKind::DoubleAcceptance => "double_acceptance",
            AnomalyKind::Backfilled => "backfilled",
            AnomalyKind::LateAcceptance => "late_acceptance",
            AnomalyKind::Overcharge => "overcharge",
            AnomalyKind::SpecialProcedureOverrun => "special_procedure_overrun",
            AnomalyKind::SupervisionOverdue => "supervision_overdue",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The Chinese name shown to supervisors.
    pub fn chinese(self) -> &'static str {
        match self {
            AnomalyKind::DeadlineWarning => "临近承诺时限",
            AnomalyKind::Overdue => "超期办件",
            AnomalyKind::LegalOverdue => "超法定时限",
            AnomalyKind::OutOfLoop => "体外循环",
            AnomalyKind::DoubleAcceptance => "两头受理",
            AnomalyKind::Backfilled => "先办后录",
            AnomalyKind::LateAcceptance => "超时受理",
            AnomalyKind::Overcharge => "违规收费",
            AnomalyKind::SpecialProcedureOverrun => "特别程序超时",
            AnomalyKind::SupervisionOverdue => "督办超期",
        }
    }

    /// The SPEC's default level.
    pub fn default_level(self) -> Level {
        match self {
            AnomalyKind::DeadlineWarning => Level::Warning,
            AnomalyKind::OutOfLoop
            | AnomalyKind::LegalOverdue
            | AnomalyKind::Overcharge
            | AnomalyKind::SupervisionOverdue => Level::Red,
            _ => Level::Yellow,
        }
    }

    /// True for rules whose instant is passed by engine time (they can be revoked).
    pub fn is_time_rule(self) -> bool {
        matches!(
            self,
            AnomalyKind::DeadlineWarning
                | AnomalyKind::Overdue
                | AnomalyKind::LegalOverdue
                | AnomalyKind::OutOfLoop
                | AnomalyKind::LateAcceptance
                | AnomalyKind::SpecialProcedureOverrun
                | AnomalyKind::SupervisionOverdue
        )
    }
}

impl fmt::Display for AnomalyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The configurable part of the rules (SPEC "default" values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// `out_of_loop` waits this long for a hall or online acceptance (default 1 h).
    pub grace_period_secs: i64,
    /// Remaining time at completion that makes a case early (default 1 working day).
    pub early_margin_secs: i64,
    /// Level of each kind, index = `kind as usize`.
    pub levels: [Level; AnomalyKind::COUNT],
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            grace_period_secs: 3600,
            early_margin_secs: DAY,
            levels: AnomalyKind::ALL.map(AnomalyKind::default_level),
        }
    }
}

impl Rules {
    /// The configured level of a kind.
    pub fn level(&self, kind: AnomalyKind) -> Level {
        self.levels[kind as usize]
    }
}

/// Fixed thresholds written in the SPEC (not configuration).
pub(crate) mod thresholds {
    use super::DAY;

    /// Warning lead: min(2 working days, 50 % of the promised time).
    pub(crate) const WARNING_LEAD: i64 = 2 * DAY;
    /// Legal fallback: promised time + 5 working days.
    pub(crate) const LEGAL_FALLBACK: i64 = 5 * DAY;
    /// `late_acceptance`: submission + 5 working days.
    pub(crate) const LATE_ACCEPTANCE: i64 = 5 * DAY;
    /// `backfilled`: recorded more than 24 h after it happened.
    pub(crate) const BACKFILL_RECORD_LAG: i64 = 24 * 3600;
    /// `backfilled`: a promised case completed less than 10 minutes after acceptance.
    pub(crate) const BACKFILL_MIN_ELAPSED: i64 = 600;
}
