'use strict';

/** Turns a title into a URL slug: lower case, words joined by '-'. */
function slugify(title) {
  return title
    .toLowerCase()
    .split(/[^a-z0-9]+/)
    .filter(Boolean)
    .join('-');
}

module.exports = { slugify };
