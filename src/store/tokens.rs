//! [`TokenStore`] on the store: token records by id, keypairs by owner.

use crate::ade::token::{
    BoxFuture, KeyOwner, TOKEN_KEYS, TOKENS, TokenId, TokenKeys, TokenRecord, TokenStore,
};

use super::{Store, StoreError};

impl TokenStore for Store {
    fn next_token_id(&self) -> Result<TokenId, StoreError> {
        self.next_id().map(TokenId)
    }

    fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.scan::<TokenRecord>(TOKENS, b"")
            .map(|item| item.map(|(_, t)| t))
            .collect()
    }

    fn token(&self, id: TokenId) -> Result<Option<TokenRecord>, StoreError> {
        self.get(TOKENS, &id.key())
    }

    fn token_keys(&self, owner: KeyOwner) -> Result<TokenKeys, StoreError> {
        Ok(self.get(TOKEN_KEYS, &owner.key())?.unwrap_or_default())
    }

    fn put_token_keys(&self, owner: KeyOwner, keys: &TokenKeys) -> Result<(), StoreError> {
        self.put(TOKEN_KEYS, &owner.key(), keys)
    }

    fn save_token(
        &self,
        token: &TokenRecord,
        keys: &TokenKeys,
        clear_new_slot: bool,
    ) -> Result<(), StoreError> {
        let mut batch = self.batch();
        batch.put(TOKENS, &token.id.key(), token)?;
        batch.put(TOKEN_KEYS, &KeyOwner::Token(token.id).key(), keys)?;
        if clear_new_slot {
            batch.delete(TOKEN_KEYS, &KeyOwner::NewToken.key());
        }
        self.apply(batch)
    }

    fn update_token(
        &self,
        id: TokenId,
        change: &mut dyn FnMut(&mut TokenRecord),
    ) -> Result<Option<TokenRecord>, StoreError> {
        self.update(TOKENS, &id.key(), |old: Option<TokenRecord>| {
            old.map(|mut t| {
                change(&mut t);
                t
            })
        })
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(Store::flush(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ade::token::{AccountInfo, AppleId, Portal, RECORD_VERSION, StoredKeypair, Terms};
    use crate::pki::secret::SecretKey;
    use time::OffsetDateTime;

    fn record(store: &Store, secret: &SecretKey) -> TokenRecord {
        TokenRecord {
            version: RECORD_VERSION,
            id: store.next_token_id().unwrap(),
            apple_id: AppleId::parse("admin@school.example").unwrap(),
            consumer_key: "CK_1".into(),
            secrets: secret.seal(b"{}").unwrap(),
            access_token_expiry: OffsetDateTime::UNIX_EPOCH,
            account: AccountInfo {
                server_name: "Orchard".into(),
                server_uuid: "UUID".into(),
                org_name: "School".into(),
                org_email: String::new(),
                admin_id: String::new(),
                portal: Portal::AppleSchoolManager,
            },
            terms: Terms::Accepted,
            added_at: OffsetDateTime::UNIX_EPOCH,
            renewed_at: None,
            cursor: None,
            last_full_fetch: None,
            last_sync: None,
            device_count: 0,
            default_profile: None,
        }
    }

    fn conformance(store: Store) {
        let secret = SecretKey::ephemeral();
        let pair = StoredKeypair {
            key: secret.seal(b"key").unwrap(),
            cert_pem: "cert".into(),
            created_at: OffsetDateTime::UNIX_EPOCH,
        };
        assert_eq!(
            store.token_keys(KeyOwner::NewToken).unwrap(),
            TokenKeys::default()
        );
        let staged = TokenKeys {
            current: None,
            staged: Some(pair.clone()),
        };
        store.put_token_keys(KeyOwner::NewToken, &staged).unwrap();
        assert_eq!(store.token_keys(KeyOwner::NewToken).unwrap(), staged);

        let first = record(&store, &secret);
        let current = TokenKeys {
            current: Some(pair),
            staged: None,
        };
        store.save_token(&first, &current, true).unwrap();
        assert_eq!(
            store.token_keys(KeyOwner::NewToken).unwrap(),
            TokenKeys::default()
        );
        assert_eq!(
            store.token_keys(KeyOwner::Token(first.id)).unwrap(),
            current
        );
        let second = record(&store, &secret);
        assert!(second.id > first.id);
        store.save_token(&second, &current, false).unwrap();
        let ids: Vec<_> = store.tokens().unwrap().iter().map(|t| t.id).collect();
        assert_eq!(ids, vec![first.id, second.id]);

        let changed = store
            .update_token(first.id, &mut |t| t.device_count = 7)
            .unwrap()
            .unwrap();
        assert_eq!(changed.device_count, 7);
        assert_eq!(store.token(first.id).unwrap().unwrap().device_count, 7);
        assert!(
            store
                .update_token(TokenId(u64::MAX), &mut |t| t.device_count = 1)
                .unwrap()
                .is_none()
        );
        assert!(store.token(TokenId(u64::MAX)).unwrap().is_none());
    }

    #[test]
    fn memory_backend() {
        conformance(Store::memory());
    }

    #[test]
    fn sled_backend() {
        let dir = tempfile::tempdir().unwrap();
        conformance(Store::open(dir.path()).unwrap());
    }
}
