//! The garbage collector (kube-controller-manager): deletes dependents whose owners are all
//! gone (Background), deletes dependents of owners in foreground deletion and then releases
//! the owner, and strips ownerReferences from dependents of owners deleted with Orphan.

use std::collections::HashSet;

use serde_json::Value;

use super::super::meta;
use super::super::resources::{PropagationPolicy, ResourceDef};
use super::super::store::{DeleteOptions, FINALIZER_FOREGROUND, FINALIZER_ORPHAN};
use super::ctx::{Ctx, log_err};

fn remove_finalizer(ctx: &Ctx, def: &'static ResourceDef, obj: &Value, finalizer: &str) {
    log_err(
        "release owner",
        ctx.modify(def, obj, |o| {
            let f: Vec<String> = meta::finalizers(o)
                .into_iter()
                .filter(|f| f != finalizer)
                .collect();
            meta::set_finalizers(o, &f);
        }),
    );
}

pub fn reconcile(ctx: &Ctx) {
    let objects = ctx.store.all_objects();
    let uids: HashSet<&str> = objects.iter().filter_map(|(_, o)| meta::uid(o)).collect();
    let dependents_of = |uid: &str| -> Vec<&(&'static ResourceDef, Value)> {
        objects
            .iter()
            .filter(|(_, o)| meta::owner_uids(o).iter().any(|u| u == uid))
            .collect()
    };
    for (def, obj) in &objects {
        let Some(uid) = meta::uid(obj) else { continue };
        let finalizers = meta::finalizers(obj);
        if meta::is_deleting(obj) && finalizers.iter().any(|f| f == FINALIZER_ORPHAN) {
            for (ddef, dep) in dependents_of(uid) {
                log_err(
                    "orphan dependent",
                    ctx.modify(ddef, dep, |d| {
                        if let Some(refs) = d["metadata"]["ownerReferences"].as_array_mut() {
                            refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid));
                            if refs.is_empty()
                                && let Some(m) = d["metadata"].as_object_mut()
                            {
                                m.remove("ownerReferences");
                            }
                        }
                    }),
                );
            }
            remove_finalizer(ctx, def, obj, FINALIZER_ORPHAN);
        } else if meta::is_deleting(obj) && finalizers.iter().any(|f| f == FINALIZER_FOREGROUND) {
            let deps = dependents_of(uid);
            if deps.is_empty() {
                remove_finalizer(ctx, def, obj, FINALIZER_FOREGROUND);
            }
            for (ddef, dep) in deps.into_iter().filter(|(_, d)| !meta::is_deleting(d)) {
                let opts = DeleteOptions {
                    propagation_policy: Some(PropagationPolicy::Foreground),
                    precondition_uid: meta::uid(dep).map(str::to_string),
                    ..Default::default()
                };
                log_err(
                    "delete dependent (foreground)",
                    ctx.store.delete(
                        ddef,
                        meta::namespace(dep).unwrap_or_default(),
                        meta::name(dep).unwrap_or_default(),
                        &opts,
                    ),
                );
            }
        }
        let owners = meta::owner_uids(obj);
        if !owners.is_empty()
            && !meta::is_deleting(obj)
            && owners.iter().all(|o| !uids.contains(o.as_str()))
        {
            let opts = DeleteOptions {
                propagation_policy: Some(PropagationPolicy::Background),
                precondition_uid: Some(uid.to_string()),
                ..Default::default()
            };
            log_err(
                "collect orphaned dependent",
                ctx.store.delete(
                    def,
                    meta::namespace(obj).unwrap_or_default(),
                    meta::name(obj).unwrap_or_default(),
                    &opts,
                ),
            );
        }
    }
}
