//! OData wire formats shared by the OData connectors (SAP Gateway v2, Dataverse and Business
//! Central v4) and by their simulators.

pub mod batch;
