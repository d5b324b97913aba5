'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { slugify } = require('../src/slug.js');

test('lowercases words', () => {
  assert.strictEqual(slugify('Hello'), 'hello');
});

test('keeps digits', () => {
  assert.strictEqual(slugify('v2'), 'v2');
});
