//! IDoc-XML packets (ORDERS05, DESADV/DELVRY) as a [`PushIntake`]: posted by an ECC XML-HTTP
//! port with HTTP Basic, or written by an ECC file port to the source's drop folder. Any 2xx
//! tells ECC the IDoc is delivered (status 03), so an unreadable packet is refused with 400
//! (ECC marks it 02 and it can be resent) after the gateway keeps it as a dead letter.

use super::canonical;
use super::client::SapClient;
use super::idoc::{Idoc, IdocParser};
use crate::erp::ErpRecord;
use crate::push::{basic_login_matches, Acknowledgement, PushError, PushIntake, PushRefusal, PushRequest, Pushed};
use connect::config::Secret;
use std::sync::Arc;

/// Where the ECC XML-HTTP port posts IDoc packets.
pub const PATH: &str = "/intake/sap/{source}/idoc";
/// Every route SAP pushes to.
pub const PATHS: &[&str] = &[PATH];

/// One SAP source's IDoc door: the system's unit table reads the quantities; without a login
/// it takes no IDocs over HTTP (the drop folder needs none).
pub struct IdocIntake {
    pub client: Arc<SapClient>,
    pub login: Option<(String, Secret)>,
}

/// The SAP system's time zone (IDoc CREDAT/CRETIM are local times).
fn sap_zone() -> jiff::tz::TimeZone {
    jiff::tz::TimeZone::get("Asia/Hong_Kong").unwrap_or(jiff::tz::TimeZone::fixed(jiff::tz::offset(8)))
}

impl PushIntake for IdocIntake {
    fn receive(&self, request: &PushRequest<'_>) -> Result<Pushed, PushRefusal> {
        let (user, password) = self
            .login
            .as_ref()
            .ok_or_else(|| PushRefusal::NotTaken { detail: "this source takes no IDocs over HTTP".into() })?;
        if !basic_login_matches(request.headers, user, password.expose()) {
            return Err(PushRefusal::Unauthenticated {
                code: "bad_login",
                detail: "the IDoc port's Basic login is missing or wrong".into(),
            });
        }
        self.decode_document(request.body)
            .map(Pushed::Records)
            .map_err(|err| PushRefusal::Unreadable { code: "malformed_idoc", reason: err.0 })
    }

    fn acknowledgement(&self) -> Acknowledgement {
        Acknowledgement::Accepted
    }

    fn decode_document(&self, body: &[u8]) -> Result<Vec<ErpRecord>, PushError> {
        let xml = std::str::from_utf8(body).map_err(|_| PushError("the IDoc is not UTF-8 XML".into()))?;
        let uoms = self.client.uoms();
        let idocs = IdocParser::new(sap_zone(), uoms.clone()).parse(xml).map_err(|err| PushError(err.to_string()))?;
        if idocs.is_empty() {
            return Err(PushError("the packet holds no IDoc".into()));
        }
        idocs
            .iter()
            .map(|idoc| match idoc {
                Idoc::Order(order) => canonical::purchase_order_from_idoc(order, uoms),
                Idoc::Delivery(delivery) => canonical::shipment_from_idoc(delivery, uoms),
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| PushError(err.to_string()))
    }
}
