//! The rollout pages: the list, and one rollout with its waves, every site's state, the halt
//! reason and the operator's buttons. The buttons are plain forms (still no JavaScript) carrying
//! the session's form token; `http/` checks it.

use super::{PageContext, escape, page, when};
use crate::rollouts::progress::{DISPLAY_STATES, Summary};
use crate::rollouts::service::RolloutView;
use crate::store::RolloutSwitch;
use std::fmt::Write as _;

/// The list of rollouts, newest first, with the fleet-wide switch.
pub fn rollouts_page(
    ctx: &PageContext<'_>,
    rollouts: &[RolloutView],
    switch: &RolloutSwitch,
) -> String {
    let mut rows = String::new();
    for view in rollouts {
        let _ = write!(
            rows,
            "<tr data-testid=\"rollout-row\" data-rollout=\"{name}\"><td><a href=\"/rollouts/{name}\">{name}</a></td>\
<td>{target}</td><td data-testid=\"rollout-state\">{state}</td><td>{wave}</td><td>{sites}</td><td>{created} by {by}</td></tr>",
            name = escape(&view.record.name),
            target = escape(&view.record.target_version),
            state = state_badge(view.state.progress.name()),
            wave = view.state.progress.wave().map_or_else(
                || "—".to_owned(),
                |wave| format!("{}/{}", wave + 1, view.plan.waves.len())
            ),
            sites = view.state.sites.len(),
            created = when(view.record.created_at),
            by = escape(&view.record.created_by),
        );
    }
    if rollouts.is_empty() {
        rows.push_str("<tr><td colspan=\"6\" data-testid=\"no-rollouts\">No rollouts yet: <code>scs-edge-region rollout create --file spec.json</code>.</td></tr>");
    }
    let body = format!(
        "<h1>Rollouts</h1>{}<table data-testid=\"rollouts\"><thead><tr><th>Rollout</th><th>Target</th><th>State</th>\
<th>Wave</th><th>Sites</th><th>Created</th></tr></thead><tbody>{rows}</tbody></table>",
        switch_notice(switch)
    );
    page(ctx.region, Some(ctx.operator), "Rollouts", true, &body)
}

/// One rollout. `form_token` is the operator's; without one (no write access from this
/// browser) the buttons are left out.
pub fn rollout_page(
    ctx: &PageContext<'_>,
    view: &RolloutView,
    summary: &Summary,
    switch: &RolloutSwitch,
    form_token: Option<&str>,
) -> String {
    let name = escape(&view.record.name);
    let mut body = format!(
        "<p><a href=\"/rollouts\">Rollouts</a></p><h1 data-testid=\"rollout-name\">{name}</h1>{}<dl>\
<dt>Target</dt><dd data-testid=\"target\">{}</dd><dt>State</dt><dd data-testid=\"rollout-state\">{}</dd>",
        switch_notice(switch),
        escape(&view.record.target_version),
        state_badge(summary.state),
    );
    if let Some(reason) = &summary.reason {
        let by = summary
            .by
            .as_ref()
            .map_or_else(String::new, |by| format!(" (by {})", escape(by)));
        let _ = write!(
            body,
            "<dt>Reason</dt><dd data-testid=\"halt-reason\">{}{by}</dd>",
            escape(reason)
        );
    }
    let _ = write!(
        body,
        "<dt>Created</dt><dd>{} by {}</dd><dt>Rules</dt><dd>at most {} at once · {}% of a wave must succeed{}</dd></dl>",
        when(view.record.created_at),
        escape(&view.record.created_by),
        view.plan.max_parallel,
        view.plan.success_threshold_percent,
        if view.plan.stop_on_failure {
            " · halts at the first failure"
        } else {
            ""
        }
    );
    if let Some(token) = form_token {
        body.push_str(&buttons(&name, summary.state, view.record.active, token));
    }
    for (index, wave) in summary.waves.iter().enumerate() {
        let counts = DISPLAY_STATES
            .iter()
            .filter_map(|state| wave.counts.get(state).map(|n| format!("{n} {state}")))
            .collect::<Vec<_>>()
            .join(" · ");
        let _ = write!(
            body,
            "<h2 data-testid=\"wave\" data-wave=\"{}\" data-status=\"{}\">Wave {} — {} <small>({}, soak {} s)</small></h2>\
<p data-testid=\"wave-counts\">{}</p><table><thead><tr><th>Site</th><th>State</th><th>Detail</th></tr></thead><tbody>",
            escape(&wave.name),
            wave.status,
            index + 1,
            escape(&wave.name),
            wave.status,
            wave.soak_secs,
            escape(&counts),
        );
        for site in summary.sites.iter().filter(|site| site.wave == index) {
            let _ = write!(
                body,
                "<tr data-testid=\"rollout-site\" data-site=\"{site}\"><td><a href=\"/sites/{site}\">{site}</a></td>\
<td data-testid=\"site-state\">{state}</td><td data-testid=\"site-detail\">{detail}</td></tr>",
                site = escape(&site.site),
                state = state_badge(site.state),
                detail = escape(site.detail.as_deref().unwrap_or("")),
            );
        }
        body.push_str("</tbody></table>");
    }
    page(
        ctx.region,
        Some(ctx.operator),
        &format!("Rollout {}", view.record.name),
        true,
        &body,
    )
}

/// Asks for the reason before a rollout is stopped for good.
pub fn stop_page(ctx: &PageContext<'_>, view: &RolloutView, form_token: &str) -> String {
    let name = escape(&view.record.name);
    let body = format!(
        "<h1>Stop rollout {name}?</h1><p>Offers not begun go back; sites updating finish and are judged. \
A stopped rollout cannot be resumed — create a new one.</p>\
<form method=\"post\" action=\"/rollouts/{name}/stop\"><input type=\"hidden\" name=\"form_token\" value=\"{token}\">\
<label>Reason <input name=\"reason\" data-testid=\"stop-reason\" required></label> \
<button type=\"submit\" data-testid=\"confirm-stop\">Stop for good</button> <a href=\"/rollouts/{name}\">cancel</a></form>",
        token = escape(form_token),
    );
    page(
        ctx.region,
        Some(ctx.operator),
        &format!("Stop {}", view.record.name),
        false,
        &body,
    )
}

/// An error page for a refused form post.
pub fn refused_page(ctx_region: &str, message: &str, back: &str) -> String {
    let body = format!(
        "<h1>Not done</h1><p data-testid=\"error\">{}</p><p><a href=\"{}\">back</a></p>",
        escape(message),
        escape(back)
    );
    page(ctx_region, None, "Not done", false, &body)
}

fn buttons(name: &str, state: &str, active: bool, token: &str) -> String {
    let token = escape(token);
    // Pausing records why, as on the CLI and REST; the reason is optional.
    let form = |action: &str, label: &str, reason: bool| {
        let reason = if reason {
            "<input name=\"reason\" data-testid=\"pause-reason\" placeholder=\"why (optional)\"> "
        } else {
            ""
        };
        format!(
            "<form method=\"post\" action=\"/rollouts/{name}/{action}\" style=\"display:inline\">\
<input type=\"hidden\" name=\"form_token\" value=\"{token}\">{reason}<button type=\"submit\" data-testid=\"{action}\">{label}</button></form> "
        )
    };
    // A <div>, not a <p>: a <form> closes an open <p>, which would leave the buttons outside it.
    let mut out = String::from("<div data-testid=\"actions\">");
    match state {
        "running" => out.push_str(&form("pause", "Pause", true)),
        "paused" | "halted" => out.push_str(&form("resume", "Resume", false)),
        _ => {}
    }
    if active && !matches!(state, "stopped" | "completed") {
        let _ = write!(
            out,
            "<a href=\"/rollouts/{name}/stop\" data-testid=\"stop\">Stop…</a>"
        );
    }
    out.push_str("</div>");
    out
}

fn switch_notice(switch: &RolloutSwitch) -> String {
    if switch.engaged {
        format!(
            "<div class=\"outage\" data-testid=\"switch\">Rollout switch engaged by {} at {}: {} — no rollout offers anything.</div>",
            escape(&switch.changed_by),
            when(switch.changed_at),
            escape(&switch.reason)
        )
    } else {
        String::new()
    }
}

fn state_badge(state: &str) -> String {
    let class = match state {
        "running" | "completed" | "committed" | "soaking" => "healthy",
        "paused" | "offered" | "downloading" | "installing" | "verifying" | "pending" => "pending",
        "halted" | "stopped" | "rolled back" | "failed" => "down",
        _ => "unknown",
    };
    format!(
        "<span class=\"badge {class}\" data-state=\"{0}\">{0}</span>",
        escape(state)
    )
}
