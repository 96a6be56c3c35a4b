//! Rotating vendor credentials: load and compare-and-swap save, against both backends and across
//! several handles on one store (two instances).

use crate::harness::Backend;

crate::contract_tests!(
    a_credential_is_saved_once_then_only_over_the_version_read,
    credentials_are_per_connection_and_name,
    a_credential_outlives_a_reopen,
    concurrent_savers_of_one_version_elect_one,
);

async fn a_credential_is_saved_once_then_only_over_the_version_read(b: &mut Backend) {
    let s = &b.store;
    assert_eq!(s.load_credential("crm", "refresh_token").await.unwrap(), None);
    assert_eq!(s.save_credential("crm", "refresh_token", "sealed-1", None, 100).await.unwrap(), Some(1));
    // A second "first save" (an instance that read no row) loses: the row is newer.
    assert_eq!(s.save_credential("crm", "refresh_token", "stale", None, 150).await.unwrap(), None);
    let row = s.load_credential("crm", "refresh_token").await.unwrap().expect("saved");
    assert_eq!((row.sealed.as_str(), row.version, row.updated_at), ("sealed-1", 1, 100));
    assert_eq!(s.save_credential("crm", "refresh_token", "sealed-2", Some(1), 200).await.unwrap(), Some(2));
    // An instance still holding version 1 cannot overwrite version 2.
    assert_eq!(s.save_credential("crm", "refresh_token", "older", Some(1), 300).await.unwrap(), None);
    assert_eq!(s.save_credential("crm", "refresh_token", "ahead", Some(7), 300).await.unwrap(), None);
    let row = s.load_credential("crm", "refresh_token").await.unwrap().expect("saved");
    assert_eq!((row.sealed.as_str(), row.version, row.updated_at), ("sealed-2", 2, 200));
}

async fn credentials_are_per_connection_and_name(b: &mut Backend) {
    let s = &b.store;
    assert_eq!(s.save_credential("crm", "refresh_token", "a", None, 1).await.unwrap(), Some(1));
    assert_eq!(s.save_credential("crm2", "refresh_token", "b", None, 1).await.unwrap(), Some(1));
    assert_eq!(s.save_credential("crm", "other", "c", None, 1).await.unwrap(), Some(1));
    assert_eq!(s.save_credential("crm", "refresh_token", "a2", Some(1), 2).await.unwrap(), Some(2));
    assert_eq!(s.load_credential("crm2", "refresh_token").await.unwrap().unwrap().sealed, "b");
    assert_eq!(s.load_credential("crm", "other").await.unwrap().unwrap().sealed, "c");
    assert_eq!(s.load_credential("crm", "refresh_token").await.unwrap().unwrap().sealed, "a2");
}

async fn a_credential_outlives_a_reopen(b: &mut Backend) {
    assert_eq!(b.store.save_credential("crm", "refresh_token", "kept", None, 1).await.unwrap(), Some(1));
    let other = b.open_again().await;
    let row = other.load_credential("crm", "refresh_token").await.unwrap().expect("shared and durable");
    assert_eq!((row.sealed.as_str(), row.version), ("kept", 1));
}

async fn concurrent_savers_of_one_version_elect_one(b: &mut Backend) {
    let mut handles = vec![b.store.clone()];
    for _ in 0..3 {
        handles.push(b.open_again().await);
    }
    let mut expected = None;
    for round in 0..10_i64 {
        let saves = handles.iter().enumerate().map(|(i, s)| {
            let s = s.clone();
            async move { s.save_credential("crm", "refresh_token", &format!("r{round}-{i}"), expected, round).await }
        });
        let results = futures::future::join_all(saves).await;
        let winners: Vec<_> = results.iter().enumerate().filter(|(_, r)| r.as_ref().unwrap().is_some()).collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        let (winner, version) = (winners[0].0, winners[0].1.as_ref().unwrap().unwrap());
        assert_eq!(version, round + 1);
        let row = b.store.load_credential("crm", "refresh_token").await.unwrap().unwrap();
        assert_eq!((row.sealed, row.version), (format!("r{round}-{winner}"), version));
        expected = Some(version);
    }
}
