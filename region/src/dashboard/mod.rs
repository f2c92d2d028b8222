//! The web dashboard: server-rendered HTML, no JavaScript, refreshing itself every few seconds.
//!
//! Plain HTML keeps the dashboard inside the region binary (nothing to build or serve separately,
//! works in any browser an operator has) and makes every value testable as text. Pages are pure
//! functions of the fleet's state; `http/` does the authentication and serving.

use crate::fleet::SiteDetail;
use crate::fleet::status::{
    connectivity, delivery_delay, gaps, outages, overall_health, site_health, was_queued,
};
use crate::store::Site;
use jiff::{SignedDuration, Timestamp};
use std::fmt::Write as _;

pub mod rollouts;

/// What every page shows beside its content.
#[derive(Debug, Clone, Copy)]
pub struct PageContext<'a> {
    /// The region's name.
    pub region: &'a str,
    /// The signed-in operator.
    pub operator: &'a str,
    /// Now, for "last seen … ago" and staleness.
    pub now: Timestamp,
    /// The sites' heartbeat interval.
    pub interval: SignedDuration,
}

/// HTML-escapes text for element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#1d2733;background:#f5f7fa}\
header{background:#0f3b5f;color:#fff;padding:12px 24px;display:flex;justify-content:space-between;align-items:center}\
header a{color:#fff}main{padding:16px 24px}table{border-collapse:collapse;width:100%;background:#fff}\
th,td{text-align:left;padding:6px 10px;border-bottom:1px solid #dde3ea;font-size:14px}th{background:#e8edf3}\
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600}\
.healthy,.online,.active{background:#d4f4dd;color:#12622c}.degraded,.stale,.pending{background:#fff1c2;color:#7a5a00}\
.down,.retired,.decommissioned{background:#fbd5d5;color:#8a1c1c}.unknown,.never,.absent{background:#e4e7eb;color:#4a5561}\
.queued{color:#7a5a00}.outage{background:#fff8e1;border:1px solid #f0d98c;padding:8px 12px;margin:8px 0}\
dl{display:grid;grid-template-columns:max-content auto;gap:4px 16px}dt{font-weight:600}";

fn page(
    ctx_region: &str,
    operator: Option<&str>,
    title: &str,
    refresh: bool,
    body: &str,
) -> String {
    let refresh = if refresh {
        "<meta http-equiv=\"refresh\" content=\"10\">"
    } else {
        ""
    };
    let who = operator.map_or(String::new(), |o| {
        format!(
            "<span data-testid=\"operator\">{} · <a href=\"/logout\">sign out</a></span>",
            escape(o)
        )
    });
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">{refresh}<title>{} — SCS Edge region {}</title>\
<style>{STYLE}</style></head><body><header><strong><a href=\"/\">SCS Edge</a> · region {} · <a href=\"/rollouts\">rollouts</a></strong>{who}</header>\
<main>{body}</main></body></html>",
        escape(title),
        escape(ctx_region),
        escape(ctx_region),
    )
}

fn badge(class: &str) -> String {
    format!("<span class=\"badge {0}\">{0}</span>", escape(class))
}

fn ago(now: Timestamp, then: Timestamp) -> String {
    let secs = now.duration_since(then).as_secs().max(0);
    match secs {
        0..=59 => format!("{secs} s ago"),
        60..=3599 => format!("{} min ago", secs / 60),
        3600..=86_399 => format!("{} h ago", secs / 3600),
        _ => format!("{} d ago", secs / 86_400),
    }
}

/// One line on a site's OS update: phase and target, how the last one ended, what failed, what was
/// refused.
fn update_summary(update: &scs_edge_proto::UpdateReport) -> String {
    use scs_edge_proto::UpdatePhase;
    let phase = match update.phase {
        UpdatePhase::Idle => "idle",
        UpdatePhase::Importing => "importing",
        UpdatePhase::Staged => "staged",
        UpdatePhase::Installing => "installing",
        UpdatePhase::Installed => "installed, waiting to reboot",
        UpdatePhase::Rebooting => "rebooting",
        UpdatePhase::Verifying => "verifying",
        UpdatePhase::Unknown => "unknown",
    };
    let mut line = phase.to_owned();
    if let Some(target) = &update.target {
        let _ = write!(line, " {target}");
    }
    if let Some(outcome) = &update.last_outcome {
        let verdict = if outcome.result == "rolled_back" {
            "rolled back"
        } else {
            outcome.result.as_str()
        };
        let _ = write!(line, " · last: {} {verdict}", outcome.version);
        if let Some(reason) = &outcome.reason {
            let _ = write!(line, " ({reason})");
        }
    }
    if !update.failed.is_empty() {
        let _ = write!(line, " · failed: {}", update.failed.join(", "));
    }
    if let Some(refusal) = &update.last_refusal {
        let _ = write!(
            line,
            " · last refused ({}): {}",
            refusal.kind, refusal.reason
        );
    }
    if let Some(error) = &update.last_error {
        let _ = write!(line, " · waiting: {error}");
    }
    if update.waivers_used > 0 {
        let _ = write!(line, " · {} under a freshness waiver", update.waivers_used);
    }
    if update.refused > 0 {
        let _ = write!(line, " · {} refused", update.refused);
    }
    line
}

fn when(t: Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// The fleet table: every site with state, connectivity, health, versions and last contact.
pub fn fleet_page(ctx: &PageContext<'_>, sites: &[Site]) -> String {
    let mut rows = String::new();
    for site in sites {
        let report = site.last_report.as_ref();
        let versions = report.map_or(String::from("—"), |r| {
            let mut v = format!("agent {}", r.versions.agent);
            if !r.versions.os.is_empty() {
                let _ = write!(v, " · OS {}", r.versions.os);
            }
            v
        });
        let seen = site
            .last_seen
            .map_or(String::from("never"), |t| ago(ctx.now, t));
        let _ = write!(
            rows,
            "<tr data-testid=\"site-row\" data-site=\"{name}\"><td><a href=\"/sites/{name}\">{name}</a></td>\
<td data-testid=\"state\">{state}</td><td data-testid=\"connectivity\">{conn}</td><td data-testid=\"health\">{health}</td>\
<td data-testid=\"versions\">{versions}</td><td data-testid=\"last-seen\">{seen}</td><td>{servers}</td></tr>",
            name = escape(&site.name),
            state = badge(site.state.as_str()),
            conn = badge(connectivity(site, ctx.now, ctx.interval).as_str()),
            health = badge(site_health(site).as_str()),
            versions = escape(&versions),
            servers = report.map_or(String::from("—"), |r| r.resources.servers.to_string()),
        );
    }
    if sites.is_empty() {
        rows.push_str("<tr><td colspan=\"7\" data-testid=\"no-sites\">No sites yet: <code>scs-edge-region site add &lt;name&gt;</code>, then <code>token create</code>.</td></tr>");
    }
    let online = sites
        .iter()
        .filter(|s| connectivity(s, ctx.now, ctx.interval).as_str() == "online")
        .count();
    let body = format!(
        "<h1>Fleet</h1><p data-testid=\"summary\">{} sites, {online} online</p>\
<table data-testid=\"fleet\"><thead><tr><th>Site</th><th>State</th><th>Link</th><th>Health</th><th>Versions</th>\
<th>Last seen</th><th>Servers</th></tr></thead><tbody>{rows}</tbody></table>",
        sites.len()
    );
    page(ctx.region, Some(ctx.operator), "Fleet", true, &body)
}

/// One site: identity, latest report by component, capacity, desired state, and the report history
/// with link outages (reports that waited in the node's queue) and gaps (no reports taken).
pub fn site_page(ctx: &PageContext<'_>, detail: &SiteDetail) -> String {
    let site = &detail.site;
    let mut body = format!(
        "<h1 data-testid=\"site-name\">{}</h1><dl>",
        escape(&site.name)
    );
    let mut field = |name: &str, testid: &str, value: String| {
        let _ = write!(
            body,
            "<dt>{name}</dt><dd data-testid=\"{testid}\">{value}</dd>"
        );
    };
    field("State", "state", badge(site.state.as_str()));
    field(
        "Link",
        "connectivity",
        badge(connectivity(site, ctx.now, ctx.interval).as_str()),
    );
    field("Health", "health", badge(site_health(site).as_str()));
    field("Added", "created", when(site.created_at));
    field("Joined", "joined", site.joined_at.map_or("—".into(), when));
    field(
        "Last seen",
        "last-seen",
        site.last_seen.map_or("never".into(), |t| {
            format!("{} ({})", when(t), ago(ctx.now, t))
        }),
    );
    field("Reports", "last-seq", site.last_seq.to_string());
    if let Some(report) = &site.last_report {
        field("Agent", "agent-version", escape(&report.versions.agent));
        field(
            "OS",
            "os-version",
            escape(if report.versions.os.is_empty() {
                "—"
            } else {
                &report.versions.os
            }),
        );
        if let Some(update) = &report.update {
            field("OS update", "os-update", escape(&update_summary(update)));
        }
        field(
            "Capacity",
            "capacity",
            format!(
                "{} vCPUs · {} MiB · {} GiB free",
                report.capacity.vcpus, report.capacity.memory_mib, report.capacity.disk_free_gib
            ),
        );
        field(
            "Resources",
            "resources",
            format!(
                "{} servers · {} networks · {} ports · {} images · {} projects",
                report.resources.servers,
                report.resources.networks,
                report.resources.ports,
                report.resources.images,
                report.resources.projects
            ),
        );
    }
    let labels: Vec<String> = site
        .desired
        .labels
        .iter()
        .map(|(k, v)| format!("{}={}", escape(k), escape(v)))
        .collect();
    field(
        "Labels",
        "labels",
        if labels.is_empty() {
            "—".into()
        } else {
            labels.join(", ")
        },
    );
    field(
        "Target OS",
        "target-os",
        site.desired
            .target_os_version
            .as_deref()
            .map_or("—".into(), escape),
    );
    body.push_str("</dl>");

    if let Some(report) = &site.last_report {
        body.push_str("<h2>Components</h2><table data-testid=\"components\"><thead><tr><th>Component</th><th>State</th><th>Detail</th></tr></thead><tbody>");
        for component in &report.health {
            let _ = write!(
                body,
                "<tr data-testid=\"component\" data-component=\"{0}\"><td>{0}</td><td>{1}</td><td>{2}</td></tr>",
                escape(&component.component),
                badge(component.state.as_str()),
                escape(component.detail.as_deref().unwrap_or("")),
            );
        }
        body.push_str("</tbody></table>");
    }

    body.push_str("<h2>History</h2>");
    for outage in outages(&detail.history, ctx.interval) {
        let _ = write!(
            body,
            "<div class=\"outage\" data-testid=\"outage\">Link down from {} until {} ({} s): {} reports waited in the site's queue and arrived late, in order.</div>",
            when(outage.from),
            when(outage.delivered_at),
            outage.delivered_at.duration_since(outage.from).as_secs(),
            outage.queued_reports,
        );
    }
    for gap in gaps(&detail.history, ctx.interval) {
        let _ = write!(
            body,
            "<div class=\"outage\" data-testid=\"gap\">No reports taken between {} and {} ({} s): the site was down or its queue was lost.</div>",
            when(gap.after),
            when(gap.before),
            gap.length().as_secs(),
        );
    }
    body.push_str("<table data-testid=\"history\"><thead><tr><th>#</th><th>Taken</th><th>Received</th><th>Delivery</th><th>Health</th></tr></thead><tbody>");
    for entry in &detail.history {
        let queued = was_queued(entry, ctx.interval);
        let delivery = if queued {
            format!(
                "<span class=\"queued\">queued {} s</span>",
                delivery_delay(entry).as_secs()
            )
        } else {
            "live".into()
        };
        let _ = write!(
            body,
            "<tr data-testid=\"history-row\" data-seq=\"{}\" data-queued=\"{queued}\"><td>{}</td><td>{}</td><td>{}</td><td>{delivery}</td><td>{}</td></tr>",
            entry.report.seq,
            entry.report.seq,
            when(entry.report.sent_at),
            when(entry.received_at),
            badge(overall_health(&entry.report).as_str()),
        );
    }
    if detail.history.is_empty() {
        body.push_str("<tr><td colspan=\"5\">No reports yet.</td></tr>");
    }
    body.push_str("</tbody></table><p><a href=\"/\">← fleet</a></p>");
    page(ctx.region, Some(ctx.operator), &site.name, true, &body)
}

/// A site page that cannot be shown.
pub fn error_page(region: &str, status: u16, site: &str) -> String {
    let message = if status == 404 {
        "No such site."
    } else {
        "The site cannot be shown."
    };
    page(
        region,
        None,
        "Error",
        false,
        &format!(
            "<h1>{status}</h1><p data-testid=\"error\">{} <code>{}</code></p><p><a href=\"/\">← fleet</a></p>",
            message,
            escape(site)
        ),
    )
}

/// A refused or failed login.
pub fn login_failed_page(region: &str, message: &str) -> String {
    page(
        region,
        None,
        "Sign-in failed",
        false,
        &format!(
            "<h1>Sign-in failed</h1><p data-testid=\"error\">{}</p><p><a href=\"/login\">Try again</a></p>",
            escape(message)
        ),
    )
}

/// After sign-in: continues to `next` (a local path) at once.
pub fn signed_in_page(region: &str, next: &str) -> String {
    let next = escape(next);
    let body = format!(
        "<h1>Signed in</h1><p>Continuing to <a data-testid=\"continue\" href=\"{next}\">the dashboard</a>…</p>"
    );
    page(region, None, "Signed in", false, &body).replacen(
        "<meta charset=\"utf-8\">",
        &format!("<meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"0;url={next}\">"),
        1,
    )
}

/// After sign-out.
pub fn logged_out_page(region: &str) -> String {
    page(
        region,
        None,
        "Signed out",
        false,
        "<h1>Signed out</h1><p><a href=\"/login\">Sign in</a></p>",
    )
}

#[cfg(test)]
mod tests;
