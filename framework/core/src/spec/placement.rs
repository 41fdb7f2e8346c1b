//! The placement pass: where a pipeline spans hosts (`options.hosts`),
//! every stage names one of them (`placement: {host: NAME}`).

use super::{Cx, Options, Stage};

pub(super) fn check(cx: &mut Cx, stages: &[Stage], options: &Options) {
    let names: Vec<&str> = options.hosts.keys().map(String::as_str).collect();
    for (name, h) in &options.hosts {
        if let Some(m) = &h.mode
            && !matches!(m.as_str(), "peer" | "client" | "router")
        {
            cx.err(
                stages.first().map(|s| s.mark).unwrap_or_default(),
                format!(
                    "host `{name}`: unknown zenoh mode `{m}`: expected `peer`, `client` or `router`"
                ),
            );
        }
    }
    let placed = stages.iter().filter(|s| s.placement.is_some()).count();
    if names.is_empty() && placed == 0 {
        return;
    }
    for s in stages {
        match &s.placement {
            None => cx.err(
                s.mark,
                format!(
                    "`{}` has no `placement: {{host: NAME}}`: where `options.hosts` is set, every stage names its host ({})",
                    s.name,
                    names.join(", ")
                ),
            ),
            Some(p) if !options.hosts.contains_key(&p.host) => cx.err(
                s.mark,
                if names.is_empty() {
                    format!(
                        "`{}` is placed on host `{}`, but there is no `options.hosts`: declare the hosts and their endpoints there",
                        s.name, p.host
                    )
                } else {
                    format!(
                        "`{}` is placed on host `{}`, which `options.hosts` does not name (hosts: {})",
                        s.name,
                        p.host,
                        names.join(", ")
                    )
                },
            ),
            Some(_) => {}
        }
    }
}
