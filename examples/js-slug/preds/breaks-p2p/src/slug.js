'use strict';

/** Turns a title into a URL slug: lower case, words joined by '-'. */
function slugify(title) {
  return title
    .toLowerCase()
    .replace(/[^a-z]+/g, '-')
    .replace(/^-+|-+$/g, '');
}

module.exports = { slugify };
