//! CSM releases as data: which services each release's runbook ("Repopulate Data in etcd
//! Clusters When Rebuilding Them", one copy per release in `shared/csm/docs-csm/`) lists, how
//! each is repopulated there, and how the release lays out its etcd clusters. Which release a
//! cluster runs is found from what it holds by `runner::detect`.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use utoipa::ToSchema;

use crate::model::{EtcdLayout, Service};

/// A CSM release whose runbook page this service follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Release {
    V1_0,
    V1_2,
    V1_3,
    V1_4,
    V1_5,
    V1_6,
    V1_7,
}

impl Release {
    pub const ALL: [Release; 7] = [
        Release::V1_0,
        Release::V1_2,
        Release::V1_3,
        Release::V1_4,
        Release::V1_5,
        Release::V1_6,
        Release::V1_7,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Release::V1_0 => "1.0",
            Release::V1_2 => "1.2",
            Release::V1_3 => "1.3",
            Release::V1_4 => "1.4",
            Release::V1_5 => "1.5",
            Release::V1_6 => "1.6",
            Release::V1_7 => "1.7",
        }
    }

    pub fn profile(self) -> &'static Profile {
        PROFILES
            .iter()
            .find(|p| p.release == self)
            .expect("every release has a profile")
    }
}

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown CSM release {0:?}; known: {known}", known = known_releases())]
pub struct UnknownRelease(pub String);

/// The releases this service knows, for messages (`1.0, 1.2, ...`).
pub fn known_releases() -> String {
    Release::ALL.map(|r| r.as_str()).join(", ")
}

impl FromStr for Release {
    type Err = UnknownRelease;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // "1.6.1" and "v1.6" name the same runbook as "1.6".
        let text = s.trim().trim_start_matches('v');
        let minor: String = text.split('.').take(2).collect::<Vec<_>>().join(".");
        Release::ALL
            .into_iter()
            .find(|r| r.as_str() == minor)
            .ok_or_else(|| UnknownRelease(s.to_owned()))
    }
}

impl Serialize for Release {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Release {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// `csm_release` in the configuration: `"auto"` (detect) or a release (`"1.6"`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReleaseSetting {
    #[default]
    Auto,
    Pinned(Release),
}

impl FromStr for ReleaseSetting {
    type Err = UnknownRelease;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim() == "auto" {
            return Ok(ReleaseSetting::Auto);
        }
        s.parse()
            .map(ReleaseSetting::Pinned)
            .map_err(|_| UnknownRelease(format!("{s}\" (\"auto\" or one of {})", known_releases())))
    }
}

impl fmt::Display for ReleaseSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReleaseSetting::Auto => f.write_str("auto"),
            ReleaseSetting::Pinned(release) => release.fmt(f),
        }
    }
}

impl Serialize for ReleaseSetting {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ReleaseSetting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// How FAS gets its firmware images back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FasReload {
    /// Re-run the `cray-fas-loader` Job (1.0).
    LoaderJob,
    /// `POST /loader/nexus` on the FAS API, then wait for the loader (1.2+).
    Nexus,
}

/// How BSS gets its boot parameters back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BssRepopulation {
    /// Re-run the REDS `init` Job (≤ 1.4).
    RedsInitJob,
    /// "Restore BSS from the ETCD backup" (1.5+): a run with `"etcd": "restore"` does it
    /// first; otherwise the run names the newest backup and how to restore it.
    RestoreFromBackup,
}

/// One release's runbook page as data.
#[derive(Debug)]
pub struct Profile {
    pub release: Release,
    /// The runbook page this profile follows (`shared/csm/docs-csm/`), and the docs-csm commit
    /// (empty when the page was read where CSM publishes it: see [`Profile::citation`]).
    pub page: &'static str,
    pub commit: &'static str,
    pub layout: EtcdLayout,
    /// The services the page lists, in its order.
    pub services: &'static [Service],
    pub fas: FasReload,
    pub bss: BssRepopulation,
    /// The ORCA systemd unit the HMNFD section restarts.
    pub orca_unit: &'static str,
    /// The NCNs the HMNFD section resubscribes besides the computes: hostlists and, when
    /// discovering them in HSM, subroles.
    pub orca_ncn_hostlists: &'static [&'static str],
    pub orca_ncn_subroles: &'static [&'static str],
    /// Whether the release still deploys External DNS's etcd and CRUS (what detection looks
    /// for beside the layout).
    pub externaldns: bool,
    pub crus: bool,
}

const PAGE: &str = "Repopulate_Data_in_etcd_Clusters_When_Rebuilding_Them";
/// The page BSS's restore from a backup follows on the Bitnami releases.
const RESTORE_PAGE: &str = "Restore_an_etcd_Cluster_from_a_Backup";

use Service::{Bos, Bss, Cps, Crus, Externaldns, Fas, Hmnfd, Meds, Reds};

const WORKERS_AND_STORAGE: &[&str] = &["ncn-w00[1-4]-can.local", "ncn-s00[1-4]-can.local"];
const WORKERS: &[&str] = &["ncn-w00[1-4]-can.local"];

/// Every profile, oldest first. Each cites its page; `SOURCES.md` names the branches.
pub static PROFILES: [Profile; 7] = [
    // release-1.0: the seed of this service.
    Profile {
        release: Release::V1_0,
        page: "Repopulate_Data_in_etcd_Clusters_When_Rebuilding_Them.release-1.0.md",
        commit: "420025d660047cfbf2dda20464459069b3b105fb",
        layout: EtcdLayout::Operator,
        services: &[Bos, Bss, Cps, Crus, Externaldns, Fas, Hmnfd, Meds, Reds],
        fas: FasReload::LoaderJob,
        bss: BssRepopulation::RedsInitJob,
        orca_unit: "cray-dvs-orca",
        orca_ncn_hostlists: WORKERS_AND_STORAGE,
        orca_ncn_subroles: &["Worker", "Storage"],
        externaldns: true,
        crus: true,
    },
    // release-1.2: External DNS gone; FAS from Nexus; `cray-orca` on workers and storage.
    Profile {
        release: Release::V1_2,
        page: "Repopulate_Data_in_etcd_Clusters_When_Rebuilding_Them.release-1.2.md",
        commit: "5a621f2f09bd03ce1dbcd19fa657fc34ab39f412",
        layout: EtcdLayout::Operator,
        services: &[Bos, Bss, Cps, Crus, Fas, Hmnfd, Meds, Reds],
        fas: FasReload::Nexus,
        bss: BssRepopulation::RedsInitJob,
        orca_unit: "cray-orca",
        orca_ncn_hostlists: WORKERS_AND_STORAGE,
        orca_ncn_subroles: &["Worker", "Storage"],
        externaldns: false,
        crus: true,
    },
    // release-1.3: as 1.2, but "Resubscribe all worker nodes" (no storage nodes).
    Profile {
        release: Release::V1_3,
        page: "Repopulate_Data_in_etcd_Clusters_When_Rebuilding_Them.release-1.3.md",
        commit: "2302606c04596d7e774be6b5ed0df5b0f574bb8c",
        layout: EtcdLayout::Operator,
        services: &[Bos, Bss, Cps, Crus, Fas, Hmnfd, Meds, Reds],
        fas: FasReload::Nexus,
        bss: BssRepopulation::RedsInitJob,
        orca_unit: "cray-orca",
        orca_ncn_hostlists: WORKERS,
        orca_ncn_subroles: &["Worker"],
        externaldns: false,
        crus: true,
    },
    // release-1.4: the page still has a CRUS section, but CRUS is removed in 1.4 (SOURCES.md):
    // a 1.4 cluster has no cray-crus to restart, so the profile leaves it out.
    Profile {
        release: Release::V1_4,
        page: "Repopulate_Data_in_etcd_Clusters_When_Rebuilding_Them.release-1.4.md",
        commit: "a04276523e84b78d7461bc455212f06d5e887333",
        layout: EtcdLayout::Operator,
        services: &[Bos, Bss, Cps, Fas, Hmnfd, Meds, Reds],
        fas: FasReload::Nexus,
        bss: BssRepopulation::RedsInitJob,
        orca_unit: "cray-orca",
        orca_ncn_hostlists: WORKERS,
        orca_ncn_subroles: &["Worker"],
        externaldns: false,
        crus: false,
    },
    // release-1.5: Bitnami etcd; BOS, BSS (restore from backup), FAS, HMNFD, MEDS. The page
    // lists MEDS with no section of its own: it is restarted as the earlier pages say.
    Profile {
        release: Release::V1_5,
        page: "Repopulate_Data_in_etcd_Clusters_When_Rebuilding_Them.release-1.5.md",
        commit: "e2a89546e448cf8f5a3d3735adb8a0d9f0a078c7",
        layout: EtcdLayout::Bitnami,
        services: &[Bos, Bss, Fas, Hmnfd, Meds],
        fas: FasReload::Nexus,
        bss: BssRepopulation::RestoreFromBackup,
        orca_unit: "cray-orca",
        orca_ncn_hostlists: WORKERS,
        orca_ncn_subroles: &["Worker"],
        externaldns: false,
        crus: false,
    },
    // release-1.6: the same page as 1.5.
    Profile {
        release: Release::V1_6,
        page: "Repopulate_Data_in_etcd_Clusters_When_Rebuilding_Them.release-1.6.md",
        commit: "6f4bfb97325eb7eb7ae53a492726a773cfbaccf7",
        layout: EtcdLayout::Bitnami,
        services: &[Bos, Bss, Fas, Hmnfd, Meds],
        fas: FasReload::Nexus,
        bss: BssRepopulation::RestoreFromBackup,
        orca_unit: "cray-orca",
        orca_ncn_hostlists: WORKERS,
        orca_ncn_subroles: &["Worker"],
        externaldns: false,
        crus: false,
    },
    // release-1.7 (read at cray-hpe.github.io/docs-csm/en-17): BOS, BSS (restore from backup),
    // FAS (Nexus), MEDS; the HMNFD section is gone, so a 1.7 run resubscribes no ORCA daemon
    // (the ORCA fields stay for the record of what 1.6 did). The etcd layout is 1.6's.
    Profile {
        release: Release::V1_7,
        page: "Repopulate_Data_in_etcd_Clusters_When_Rebuilding_Them.release-1.7.md",
        commit: "",
        layout: EtcdLayout::Bitnami,
        services: &[Bos, Bss, Fas, Meds],
        fas: FasReload::Nexus,
        bss: BssRepopulation::RestoreFromBackup,
        orca_unit: "cray-orca",
        orca_ncn_hostlists: WORKERS,
        orca_ncn_subroles: &["Worker"],
        externaldns: false,
        crus: false,
    },
];

impl Profile {
    pub fn has(&self, service: Service) -> bool {
        self.services.contains(&service)
    }

    /// The runbook page, as cited in runs and in `GET /services`: its docs-csm commit, or
    /// (a release whose branch this project has no copy of) where CSM publishes it.
    /// Where this release's "Restore an etcd Cluster from a Backup" is, which BSS's restore
    /// follows on the Bitnami releases: the page as read for 1.6 (1.5's procedure is the same),
    /// 1.7's on the published documentation, 1.3's for the etcd-operator releases.
    pub fn restore_procedure(&self) -> String {
        match self.release {
            Release::V1_7 => format!(
                "docs-csm {RESTORE_PAGE} (https://cray-hpe.github.io/docs-csm/en-17/operations/\
                 kubernetes/{}/)",
                RESTORE_PAGE.to_lowercase()
            ),
            Release::V1_5 | Release::V1_6 => format!("{RESTORE_PAGE}.release-1.6.md"),
            _ => format!("{RESTORE_PAGE}.release-1.3.md"),
        }
    }

    pub fn citation(&self) -> String {
        debug_assert!(self.page.starts_with(PAGE));
        match self.commit.get(..12) {
            Some(commit) => format!("docs-csm {} ({commit})", self.page),
            None => format!(
                "docs-csm {} (https://cray-hpe.github.io/docs-csm/en-{}/operations/kubernetes/{}/)",
                self.page,
                self.release.as_str().replace('.', ""),
                PAGE.to_lowercase()
            ),
        }
    }

    /// The name of `service`'s etcd cluster in this release's layout, if it has one.
    pub fn etcd_cluster(&self, service: Service) -> Option<String> {
        service
            .etcd_service()
            .filter(|_| self.has(service))
            .map(|csm| self.layout.cluster_name(csm))
    }
}

/// The release in force and why: what the configuration pinned, or what detection found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReleaseInForce {
    /// `1.0`, `1.2` ... `1.7`.
    #[schema(value_type = String, example = "1.6")]
    pub release: Release,
    /// `configured` (`csm_release` pins it) or `detected` (`csm_release = "auto"`).
    pub source: String,
    /// The runbook page the runs follow.
    pub runbook: String,
    pub etcd_layout: EtcdLayout,
    /// What the cluster holds that made detection choose this release (empty when pinned).
    pub evidence: Vec<String>,
}

impl ReleaseInForce {
    pub fn pinned(release: Release) -> Self {
        Self::new(release, "configured", Vec::new())
    }

    pub fn new(release: Release, source: &str, evidence: Vec<String>) -> Self {
        let profile = release.profile();
        ReleaseInForce {
            release,
            source: source.to_owned(),
            runbook: profile.citation(),
            etcd_layout: profile.layout,
            evidence,
        }
    }

    pub fn profile(&self) -> &'static Profile {
        self.release.profile()
    }

    /// One line for the run's log.
    pub fn describe(&self) -> String {
        let how = if self.evidence.is_empty() {
            format!("{} by csm_release", self.source)
        } else {
            format!("{}: {}", self.source, self.evidence.join("; "))
        };
        format!(
            "following CSM {} ({how}); runbook {}",
            self.release, self.runbook
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_parse_from_minor_patch_and_v_prefix() {
        assert_eq!("1.6".parse::<Release>().unwrap(), Release::V1_6);
        assert_eq!("1.3.2".parse::<Release>().unwrap(), Release::V1_3);
        assert_eq!("v1.0".parse::<Release>().unwrap(), Release::V1_0);
        assert!("1.1".parse::<Release>().is_err());
        assert_eq!(
            "auto".parse::<ReleaseSetting>().unwrap(),
            ReleaseSetting::Auto
        );
        let err = "1.9".parse::<ReleaseSetting>().unwrap_err().to_string();
        assert!(err.contains("auto"), "{err}");
    }

    #[test]
    fn every_profile_cites_its_own_page() {
        for profile in &PROFILES {
            assert!(
                profile
                    .page
                    .ends_with(&format!("release-{}.md", profile.release)),
                "{}",
                profile.page
            );
        }
    }

    #[test]
    fn services_follow_the_pages() {
        assert!(Release::V1_0.profile().has(Service::Externaldns));
        assert!(!Release::V1_2.profile().has(Service::Externaldns));
        assert!(Release::V1_3.profile().has(Service::Crus));
        assert!(!Release::V1_4.profile().has(Service::Crus));
        assert_eq!(
            Release::V1_6.profile().services,
            &[Bos, Bss, Fas, Hmnfd, Meds]
        );
        assert_eq!(
            Release::V1_6
                .profile()
                .etcd_cluster(Service::Bss)
                .as_deref(),
            Some("cray-bss-bitnami-etcd")
        );
        assert_eq!(
            Release::V1_3
                .profile()
                .etcd_cluster(Service::Bss)
                .as_deref(),
            Some("cray-bss-etcd")
        );
        assert_eq!(Release::V1_6.profile().etcd_cluster(Service::Reds), None);
        // 1.7's page drops the HMNFD section.
        assert_eq!(Release::V1_7.profile().services, &[Bos, Bss, Fas, Meds]);
        assert_eq!(Release::V1_7.profile().etcd_cluster(Service::Hmnfd), None);
        assert_eq!("1.7.0".parse::<Release>().unwrap(), Release::V1_7);
    }

    #[test]
    fn a_page_without_a_commit_is_cited_where_csm_publishes_it() {
        let citation = Release::V1_7.profile().citation();
        assert!(
            citation.ends_with(
                "(https://cray-hpe.github.io/docs-csm/en-17/operations/kubernetes/\
                 repopulate_data_in_etcd_clusters_when_rebuilding_them/)"
            ),
            "{citation}"
        );
        assert!(
            Release::V1_6
                .profile()
                .citation()
                .ends_with("(6f4bfb97325e)")
        );
    }
}
