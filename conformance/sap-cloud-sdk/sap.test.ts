// The SAP Cloud SDK for JavaScript (OData v2), with clients its own generator made offline from
// SAP's real $metadata (the fixtures), against dingbridge's SAP simulator. The simulator is
// reached through the SDK's documented destination object (url, user, password); nothing else
// is configured. Run by conformance/test_sap_cloud_sdk.py, which installs and generates first.

import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { desc } from '@sap-cloud-sdk/odata-v2';
import { apiMaterialStockSrv } from './gen/API_MATERIAL_STOCK_SRV';
import { apiPurchaseorderProcessSrv } from './gen/API_PURCHASEORDER_PROCESS_SRV';
import { apiPurchasereqProcessSrv } from './gen/API_PURCHASEREQ_PROCESS_SRV';

const base = process.env.SAP_SIM_URL as string;
let destination: { url: string; username: string; password: string };

before(async () => {
  const info = (await (await fetch(`${base}/_sim/info`)).json()).info;
  destination = { url: base, username: info.user, password: info.password };
});

const { materialStockApi, matlStkInAcctModApi } = apiMaterialStockSrv();
const { purchaseOrderApi, purchaseOrderItemApi } = apiPurchaseorderProcessSrv();
const { purchaseRequisitionHeaderApi } = apiPurchasereqProcessSrv();

// The SDK wraps a failed request's HTTP answer in the cause chain of the error it throws.
function httpStatus(error: any): number | undefined {
  for (let e = error; e; e = e.cause) {
    if (e.response?.status) return e.response.status;
  }
  return undefined;
}

test('material stock: every declared set answers; $top, filter and count', async () => {
  // A_MaterialStock is declared but not seeded: an empty collection, not a 404.
  const headers = await materialStockApi.requestBuilder().getAll().top(5).execute(destination);
  assert.ok(Array.isArray(headers));
  const stock = await matlStkInAcctModApi.requestBuilder().getAll().top(5).execute(destination);
  assert.ok(stock.length > 0);
  const material = stock[0].material;
  const rows = await matlStkInAcctModApi
    .requestBuilder()
    .getAll()
    .filter(matlStkInAcctModApi.schema.MATERIAL.equals(material))
    .execute(destination);
  assert.ok(rows.length > 0);
  assert.ok(rows.every((row) => row.material === material));
  const count = await matlStkInAcctModApi
    .requestBuilder()
    .getAll()
    .filter(matlStkInAcctModApi.schema.MATERIAL.equals(material))
    .count()
    .execute(destination);
  assert.equal(count, rows.length);
});

test('purchase order: get by key, select and expand the items', async () => {
  const order = await purchaseOrderApi
    .requestBuilder()
    .getByKey('4500000123')
    .select(
      purchaseOrderApi.schema.PURCHASE_ORDER,
      purchaseOrderApi.schema.SUPPLIER,
      purchaseOrderApi.schema.TO_PURCHASE_ORDER_ITEM.select(
        purchaseOrderItemApi.schema.PURCHASE_ORDER_ITEM,
        purchaseOrderItemApi.schema.MATERIAL,
        purchaseOrderItemApi.schema.ORDER_QUANTITY,
      ),
    )
    .execute(destination);
  assert.equal(order.purchaseOrder, '4500000123');
  assert.ok(order.toPurchaseOrderItem.length > 0);
  assert.ok(order.toPurchaseOrderItem.every((item) => item.material));
  // Edm.Decimal arrives as a string and parses to a BigNumber.
  assert.ok(order.toPurchaseOrderItem[0].orderQuantity?.isGreaterThan(0));
});

test('purchase order: filter with and/or and order by, paging to the end', async () => {
  const all = await purchaseOrderApi.requestBuilder().getAll().execute(destination);
  const some = await purchaseOrderApi
    .requestBuilder()
    .getAll()
    .filter(purchaseOrderApi.schema.COMPANY_CODE.equals('HK01'))
    .orderBy(desc(purchaseOrderApi.schema.PURCHASE_ORDER))
    .execute(destination);
  assert.equal(some.length, all.filter((po) => po.companyCode === 'HK01').length);
  const numbers = some.map((po) => po.purchaseOrder);
  assert.deepEqual(numbers, [...numbers].sort().reverse());
});

test('a missing key is a 404 the SDK reports with the status', async () => {
  await assert.rejects(
    purchaseOrderApi.requestBuilder().getByKey('4599999999').execute(destination),
    (error: any) => httpStatus(error) === 404,
  );
});

test('CSRF-protected update with the ETag the read returned, then a stale ETag is refused', async () => {
  const order = await purchaseOrderApi.requestBuilder().getByKey('4500000124').execute(destination);
  const elsewhere = await purchaseOrderApi.requestBuilder().getByKey('4500000124').execute(destination);
  order.purchasingGroup = 'P02';
  // The SDK fetches the CSRF token itself and sends If-Match from the entity's version.
  await purchaseOrderApi.requestBuilder().update(order).execute(destination);
  const again = await purchaseOrderApi.requestBuilder().getByKey('4500000124').execute(destination);
  assert.equal(again.purchasingGroup, 'P02');
  // A copy read before that change still carries the old ETag.
  elsewhere.purchasingGroup = 'P03';
  await assert.rejects(
    purchaseOrderApi.requestBuilder().update(elsewhere).execute(destination),
    (error: any) => httpStatus(error) === 412,
  );
});

test('wrong credentials are a 401', async () => {
  await assert.rejects(
    purchaseRequisitionHeaderApi
      .requestBuilder()
      .getAll()
      .top(1)
      .execute({ url: base, username: 'nobody', password: 'wrong' }),
    (error: any) => httpStatus(error) === 401,
  );
});
