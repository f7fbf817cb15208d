// The CommonJS build loads with require() and exposes the same API.
const assert = require("node:assert/strict");
const { test } = require("node:test");

test("require() gives the SDK", () => {
  const sdk = require("../dist/cjs/index.js");
  assert.equal(typeof sdk.Warren, "function");
  assert.ok(new sdk.NotFoundError("x", "not_found", 404) instanceof sdk.WarrenError);
  assert.equal(typeof new sdk.Warren({ url: "http://127.0.0.1:1" }).createSandbox, "function");
});
