//! The resource pass: each stage's budget (memory, CPU threads, device,
//! GPU memory) against a [`Machine`], this one or a described one.

use std::collections::HashMap;

use super::{Cx, Device, Machine, Stage};
use crate::units::ByteSize;

pub(super) fn check(cx: &mut Cx, stages: &[Stage], machine: &Machine) {
    // where the pipeline spans hosts, each host's stages share that host
    let mut hosts: std::collections::BTreeMap<Option<&str>, Vec<&Stage>> = Default::default();
    for s in stages {
        hosts
            .entry(s.placement.as_ref().map(|p| p.host.as_str()))
            .or_default()
            .push(s);
    }
    for (host, group) in hosts {
        if let (Some(h), Some(only)) = (host, &machine.only_host)
            && h != only
        {
            continue;
        }
        let m = host.and_then(|h| machine.hosts.get(h)).unwrap_or(machine);
        check_host(cx, &group, m);
    }
}

fn check_host(cx: &mut Cx, stages: &[&Stage], machine: &Machine) {
    let mut threads = 0usize;
    let mut gpu_mem: HashMap<usize, u64> = HashMap::new();
    for s in stages {
        let r = &s.resources;
        if let Some(m) = r.memory
            && m.0 > machine.memory
        {
            cx.err(
                s.mark,
                format!(
                    "`{}` asks for {} of memory but {} has {} (short by {})",
                    s.name,
                    m,
                    machine.what(),
                    ByteSize(machine.memory),
                    ByteSize(m.0 - machine.memory)
                ),
            );
        }
        if let Some(t) = r.cpu_threads {
            threads += t;
            if t == 0 {
                cx.err(
                    s.mark,
                    format!("`{}`: `cpu_threads` must be at least 1", s.name),
                );
            } else if t > machine.cpus {
                cx.err(
                    s.mark,
                    format!(
                        "`{}` asks for {t} CPU threads but {} has {} (short by {})",
                        s.name,
                        machine.what(),
                        machine.cpus,
                        t - machine.cpus
                    ),
                );
            } else if threads > machine.cpus {
                cx.err(
                    s.mark,
                    format!(
                        "the stages' `cpu_threads` add up to {threads} with `{}`, but {} has {} CPU cores (short by {})",
                        s.name,
                        machine.what(),
                        machine.cpus,
                        threads - machine.cpus
                    ),
                );
            }
        }
        if !s.node.uses_device() {
            let what = if matches!(r.device, Device::Cuda(_)) {
                Some("device")
            } else if r.gpu_memory.is_some() {
                Some("gpu_memory")
            } else if r.instances.is_some_and(|n| n != 1) {
                Some("instances")
            } else {
                None
            };
            if let Some(what) = what {
                cx.err(
                    s.mark,
                    format!(
                        "`{}` ({}) runs on the CPU only: `resources.{what}` applies to stages that run models (RunInference)",
                        s.name, s.type_name
                    ),
                );
            }
            continue;
        }
        if r.instances == Some(0) {
            cx.err(
                s.mark,
                format!("`{}`: `instances` must be at least 1", s.name),
            );
        }
        let gpu = match r.device {
            Device::Cuda(n) => {
                let n = n as usize;
                if n >= machine.gpus.len() {
                    cx.err(
                        s.mark,
                        format!(
                            "`{}` asks for device cuda:{n} but {} has {} CUDA device{}{}",
                            s.name,
                            machine.what(),
                            machine.gpus.len(),
                            if machine.gpus.len() == 1 { "" } else { "s" },
                            if machine.gpus.is_empty() && machine.described.is_none() {
                                " (or this build of rill has no `cuda` feature); use `device: auto` to fall back to the CPU"
                            } else {
                                ""
                            }
                        ),
                    );
                    continue;
                }
                Some(n)
            }
            Device::Auto => (!machine.gpus.is_empty()).then_some(0),
            Device::Cpu => None,
        };
        if let Some(m) = r.gpu_memory {
            match gpu {
                None if r.device == Device::Cpu => cx.err(
                    s.mark,
                    format!(
                        "`{}` sets `gpu_memory` but runs on the CPU (`device: cpu`)",
                        s.name
                    ),
                ),
                None => {} // auto on a machine without a GPU: runs on the CPU
                Some(g) => {
                    let total = gpu_mem.entry(g).or_default();
                    *total += m.0;
                    let have = machine.gpus[g];
                    if *total > have {
                        cx.err(
                            s.mark,
                            format!(
                                "`{}` asks for {} of GPU memory on cuda:{g}, which has {}{} (short by {})",
                                s.name,
                                m,
                                ByteSize(have),
                                if *total > m.0 {
                                    format!(
                                        " and gives {} to other stages",
                                        ByteSize(*total - m.0)
                                    )
                                } else {
                                    String::new()
                                },
                                ByteSize(*total - have)
                            ),
                        );
                    }
                }
            }
        }
    }
}
