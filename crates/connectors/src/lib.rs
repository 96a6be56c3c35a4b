//! Vendor connectors: one module per system with the same common files (`auth`, `client`,
//! `errors`, `source`, `sim/`, `tests`), plus `sink` where the vendor is a destination (DingTalk,
//! Salesforce, Zoho) and `approval`/`canonical`/`reader`/`push` where it is an ERP (read, written
//! back to by approvals, pushing its changes).
//! A connector owns its vendor knowledge; the shared machinery (sink contract, retry, rate
//! limiting) lives in `dingbridge-connect`, the simulator chassis in `dingbridge-sim`.

pub mod approval;
pub mod crm;
pub mod crm_destination;
pub mod crm_source;
pub mod dingtalk;
pub mod dynamics;
pub mod erp;
pub mod erp_source;
pub mod keyset;
pub mod netsuite;
pub mod push;
pub mod reader;
pub mod registry;
pub mod salesforce;
pub mod sap;
pub mod zoho;

#[cfg(test)]
mod poll_tests;

#[cfg(test)]
mod tests {
    /// R22: every host a connector knows by itself is https; only the configured URLs (checked
    /// by the config) and the simulators of `--sim-endpoints` are ever plain http.
    #[test]
    fn every_built_in_vendor_host_is_https() {
        let mut hosts: Vec<String> = vec![
            crate::dingtalk::openapi::MAINLAND_OLD_API_BASE.into(),
            crate::dingtalk::openapi::MAINLAND_NEW_API_BASE.into(),
            crate::dingtalk::openapi::OVERSEAS_OLD_API_BASE.into(),
            crate::dingtalk::openapi::OVERSEAS_NEW_API_BASE.into(),
            crate::dingtalk::sink::DEFAULT_BASE_URL.into(),
            crate::dynamics::auth::DEFAULT_AUTHORITY.into(),
            crate::dynamics::bc::BC_HOST.into(),
            crate::dynamics::BC_RESOURCE.into(),
        ];
        for dc in crate::zoho::auth::DataCentre::ALL {
            hosts.push(dc.accounts_server().into());
            hosts.push(dc.api_domain().into());
        }
        for account in ["1234567", "1234567_SB1"] {
            hosts.push(crate::netsuite::account::AccountId::parse(account).expect("an account id").rest_base());
        }
        for host in hosts {
            assert!(host.starts_with("https://"), "{host}");
        }
    }
}
