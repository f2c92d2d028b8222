//! The decisions inside the check-and-change operations, taken on values both engines have just read
//! under their lock. Kept apart from the SQL so the two engines cannot disagree on when a token is
//! refused, which reports are new, or whether a desired-state change is a change.

use super::{CertificateRecord, DesiredChange, RolloutSwitch, SiteState, StoreError, TokenRefusal};
use scs_edge_proto::DesiredState;

/// A `join_tokens` row as the join check needs it.
#[derive(Debug)]
pub(super) struct TokenRow {
    pub(super) site: String,
    pub(super) expires_at: i64,
    pub(super) used_at: Option<i64>,
}

/// Whether `token` (None: no row with that hash) lets a node join `site` at `now` (microseconds).
///
/// The site is checked first so that a token stolen from another site's provisioning reveals nothing
/// about that token's state; a token is refused from the instant of its expiry on.
pub(super) fn check_token(
    token: Option<&TokenRow>,
    site: &str,
    now: i64,
) -> Result<(), StoreError> {
    let refusal = match token {
        None => Some(TokenRefusal::Unknown),
        Some(t) if t.site != site => Some(TokenRefusal::OtherSite),
        Some(t) if t.used_at.is_some() => Some(TokenRefusal::AlreadyUsed),
        Some(t) if now >= t.expires_at => Some(TokenRefusal::Expired),
        Some(_) => None,
    };
    refusal.map_or(Ok(()), |r| Err(StoreError::TokenRefused(r)))
}

/// Refuses any change to a decommissioned site (its row stays only for the audit trail).
pub(super) fn ensure_changeable(name: &str, state: SiteState) -> Result<(), StoreError> {
    if state == SiteState::Decommissioned {
        return Err(StoreError::SiteDecommissioned(name.to_owned()));
    }
    Ok(())
}

/// A join records the certificate of the joining site; anything else is a caller bug that must not
/// reach the revocation table.
pub(super) fn ensure_names(
    certificate: &CertificateRecord,
    site: &str,
    operation: &'static str,
) -> Result<(), StoreError> {
    if certificate.site == site {
        return Ok(());
    }
    Err(StoreError::Database {
        operation,
        message: format!(
            "certificate {} names site {}, not the joining site {site}",
            certificate.serial, certificate.site
        ),
    })
}

/// The items of a batch to store, given the stored `last_seq`: those at or below it are re-sends and
/// are skipped; the others must run `last_seq + 1, last_seq + 2, …` without a hole, else the whole
/// batch is refused with the `seq` the node must resend from.
pub(super) fn new_reports<T>(
    last_seq: u64,
    batch: &[T],
    seq: impl Fn(&T) -> u64,
) -> Result<Vec<&T>, StoreError> {
    let expected = last_seq.saturating_add(1);
    let mut next = expected;
    let mut fresh = Vec::new();
    for item in batch {
        let s = seq(item);
        if s <= last_seq {
            continue;
        }
        if s != next {
            return Err(StoreError::OutOfOrder { expected });
        }
        fresh.push(item);
        next = next.saturating_add(1);
    }
    Ok(fresh)
}

/// The desired state after `change`, or `None` when it changes nothing (the generation only moves
/// when something did, so nodes do not refetch for a no-op edit).
pub(super) fn apply_change(current: &DesiredState, change: &DesiredChange) -> Option<DesiredState> {
    let labels = change.labels.as_ref().unwrap_or(&current.labels);
    let target = change
        .target_os_version
        .as_ref()
        .unwrap_or(&current.target_os_version);
    let window = change
        .maintenance_window
        .as_ref()
        .unwrap_or(&current.maintenance_window);
    if *labels == current.labels
        && *target == current.target_os_version
        && *window == current.maintenance_window
    {
        return None;
    }
    Some(DesiredState {
        generation: current.generation + 1,
        labels: labels.clone(),
        target_os_version: target.clone(),
        maintenance_window: window.clone(),
    })
}

/// A change of the target OS version alone.
pub(super) fn target_change(target: Option<String>) -> DesiredChange {
    DesiredChange {
        target_os_version: Some(target),
        ..DesiredChange::default()
    }
}

/// The revision after `from`.
pub(super) fn next_revision(from: u64, operation: &'static str) -> Result<u64, StoreError> {
    from.checked_add(1).ok_or(StoreError::Database {
        operation,
        message: "rollout revision overflow".into(),
    })
}

/// A rollout step may offer only while the fleet-wide switch is released.
pub(super) fn offers_allowed(switch: &RolloutSwitch) -> Result<(), StoreError> {
    if switch.engaged {
        return Err(StoreError::SwitchEngaged {
            by: switch.changed_by.clone(),
            reason: switch.reason.clone(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(site: &str, expires_at: i64, used_at: Option<i64>) -> TokenRow {
        TokenRow {
            site: site.into(),
            expires_at,
            used_at,
        }
    }

    fn refusal(result: Result<(), StoreError>) -> Option<TokenRefusal> {
        match result {
            Ok(()) => None,
            Err(StoreError::TokenRefused(r)) => Some(r),
            Err(other) => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn token_refusals_in_precedence_order() {
        assert_eq!(
            refusal(check_token(None, "a", 0)),
            Some(TokenRefusal::Unknown)
        );
        assert_eq!(
            refusal(check_token(Some(&token("b", 0, Some(0))), "a", 10)),
            Some(TokenRefusal::OtherSite),
            "another site's token says nothing about its state"
        );
        assert_eq!(
            refusal(check_token(Some(&token("a", 0, Some(0))), "a", 10)),
            Some(TokenRefusal::AlreadyUsed)
        );
        assert_eq!(
            refusal(check_token(Some(&token("a", 10, None)), "a", 10)),
            Some(TokenRefusal::Expired),
            "refused from the expiry instant on"
        );
        assert_eq!(
            refusal(check_token(Some(&token("a", 11, None)), "a", 10)),
            None
        );
    }

    #[test]
    fn batches_skip_resends_and_refuse_holes() {
        let seqs = |batch: &[u64], last| {
            new_reports(last, batch, |s| *s).map(|v| v.into_iter().copied().collect::<Vec<_>>())
        };
        assert_eq!(seqs(&[1, 2, 3], 0).expect("in order"), vec![1, 2, 3]);
        assert_eq!(seqs(&[2, 3, 4, 5], 3).expect("overlap"), vec![4, 5]);
        assert_eq!(seqs(&[1, 2], 3).expect("all resent"), Vec::<u64>::new());
        assert!(matches!(
            seqs(&[5], 3),
            Err(StoreError::OutOfOrder { expected: 4 })
        ));
        assert!(matches!(
            seqs(&[4, 6], 3),
            Err(StoreError::OutOfOrder { expected: 4 })
        ));
        assert!(matches!(
            seqs(&[4, 4], 3),
            Err(StoreError::OutOfOrder { expected: 4 })
        ));
    }

    #[test]
    fn only_a_real_change_moves_the_generation() {
        let current = DesiredState {
            generation: 3,
            labels: [("tier".to_owned(), "factory".to_owned())].into(),
            target_os_version: Some("7".into()),
            maintenance_window: None,
        };
        assert_eq!(apply_change(&current, &DesiredChange::default()), None);
        let same = DesiredChange {
            labels: Some(current.labels.clone()),
            target_os_version: Some(Some("7".into())),
            maintenance_window: None,
        };
        assert_eq!(apply_change(&current, &same), None);
        let cleared = apply_change(
            &current,
            &DesiredChange {
                labels: None,
                target_os_version: Some(None),
                maintenance_window: None,
            },
        )
        .expect("changed");
        assert_eq!(cleared.generation, 4);
        assert_eq!(cleared.labels, current.labels);
        assert_eq!(cleared.target_os_version, None);
    }
}
