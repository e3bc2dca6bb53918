/**
 * chatauth × Google Forms: every response to the form creates a Google Chat
 * space, as a user who connected Google Chat once at OAuthStart. The
 * response's id is the requestId, so a retried call never creates a second
 * space for one response.
 *
 * Set up, in the form's editor: Extensions → Apps Script.
 *  1. Paste this file as Code.gs, and appsscript.json as the manifest
 *     (Project Settings → "Show appsscript.json manifest file in editor").
 *  2. Project Settings → Script properties:
 *       CHATAUTH_URL   https://REGION-PROJECT.cloudfunctions.net
 *       CHATAUTH_AUTH  idtoken (default) or hmac
 *     and, for hmac only:
 *       CHATAUTH_WEBHOOK_SECRET  one line of the WEBHOOK_SECRETS secret
 *       CHATAUTH_USER            whose consent to use (default: the trigger's owner)
 *     Secrets live in the script properties, never in this file. Anyone who
 *     may edit the script can read them: share it only with such people.
 *  3. Run installTrigger() once from the editor and authorize the script.
 *     The trigger then runs as you, for every response.
 *
 * ID-token variant (CHATAUTH_AUTH=idtoken): the request carries
 * Authorization: Bearer ScriptApp.getIdentityToken(), an OpenID Connect ID
 * token of the user the trigger runs as. Its "aud" is the OAuth client ID
 * of the script's Google Cloud project (NNNN-xxxx.apps.googleusercontent.com),
 * not the function's URL: run logIdentityTokenAudience() once and add what it
 * logs to the function's ALLOWED_AUDIENCES. The manifest's "openid" scope is
 * what lets the script get the token, and userinfo.email puts the email in
 * it. Such a caller may create spaces only as itself (user = its own email)
 * unless its email is listed in TRUSTED_CALLERS.
 *
 * HMAC variant (CHATAUTH_AUTH=hmac): the request carries
 * X-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>,
 * over the exact body sent. An HMAC caller may act for any user.
 */

var MAX_TRIES = 4;

/** Installs the form-submit trigger (once; running it again replaces it). */
function installTrigger() {
  var form = FormApp.getActiveForm();
  ScriptApp.getProjectTriggers().forEach(function (trigger) {
    if (trigger.getHandlerFunction() === 'onFormSubmit') {
      ScriptApp.deleteTrigger(trigger);
    }
  });
  ScriptApp.newTrigger('onFormSubmit').forForm(form).onFormSubmit().create();
}

/** The trigger: one space per form response. */
function onFormSubmit(e) {
  var response = e.response;
  var props = PropertiesService.getScriptProperties();
  var request = {
    user: requestUser(props),
    displayName: spaceName(e.source, response),
    description: summary(response),
    requestId: requestIdFor(response.getId()),
  };
  var space = callChatAuth('CreateSpace', request);
  console.log('Created ' + space.name + ' (' + space.spaceUri + ') for response ' + response.getId());
}

/** Withdraws a user's consent (run by hand, e.g. disconnectUser('alice@example.com')). */
function disconnectUser(user) {
  return callChatAuth('Disconnect', { user: user });
}

/** Logs the "aud" of this script's identity tokens, for ALLOWED_AUDIENCES. */
function logIdentityTokenAudience() {
  var payload = ScriptApp.getIdentityToken().split('.')[1];
  payload += '==='.slice((payload.length + 3) % 4);
  var claims = JSON.parse(Utilities.newBlob(Utilities.base64DecodeWebSafe(payload)).getDataAsString());
  console.log('Add to ALLOWED_AUDIENCES: ' + claims.aud + ' (the token is for ' + claims.email + ')');
}

function requestUser(props) {
  if (authMode(props) === 'hmac' && props.getProperty('CHATAUTH_USER')) {
    return props.getProperty('CHATAUTH_USER');
  }
  // An ID-token caller may act only as itself: the trigger's owner.
  return Session.getEffectiveUser().getEmail();
}

function authMode(props) {
  return (props.getProperty('CHATAUTH_AUTH') || 'idtoken').trim().toLowerCase();
}

/** The space's name: the first answer (or the form's title) and the response. */
function spaceName(form, response) {
  var first = response.getItemResponses()[0];
  var base = first ? String(first.getResponse()) : form.getTitle();
  return truncate(clean(base), 100) + ' #' + response.getId().slice(-6);
}

/** The space's description: each question and its answer. */
function summary(response) {
  var lines = response.getItemResponses().map(function (item) {
    return item.getItem().getTitle() + ': ' + String(item.getResponse());
  });
  return truncate(lines.join('\n'), 4096);
}

/** The requestId CreateSpace accepts: 1 to 128 of A-Z a-z 0-9 . _ : ~ - */
function requestIdFor(responseId) {
  return responseId.replace(/[^A-Za-z0-9._:~-]/g, '-').slice(0, 128);
}

/** Replaces control characters, which a display name may not hold. */
function clean(s) {
  return s.replace(/[\u0000-\u001f\u007f-\u009f]/g, ' ').trim() || 'Form response';
}

/** Cuts s to n characters (code points, as the function counts them). */
function truncate(s, n) {
  var chars = Array.from(s);
  return chars.length <= n ? s : chars.slice(0, n).join('');
}

/**
 * Calls a chatauth function and returns its JSON answer. Answers that may
 * pass (429, 502, 503, 504) are retried with the same body, and so the same
 * requestId, after Retry-After or a growing pause; each try is signed anew.
 */
function callChatAuth(fn, payload) {
  var props = PropertiesService.getScriptProperties();
  var base = (props.getProperty('CHATAUTH_URL') || '').trim().replace(/\/+$/, '');
  // https, as deployed; http only for a loopback address (a local test).
  if (!/^(https:\/\/|http:\/\/(localhost|127\.0\.0\.1)(:\d+)?$)/.test(base)) {
    throw new Error('Set the script property CHATAUTH_URL to https://REGION-PROJECT.cloudfunctions.net');
  }
  var body = asciiJson(payload);
  for (var attempt = 1; ; attempt++) {
    var headers = authMode(props) === 'hmac' ? hmacHeaders(body, props) : idTokenHeaders();
    var res = UrlFetchApp.fetch(base + '/' + fn, {
      method: 'post',
      contentType: 'application/json',
      payload: body,
      headers: headers,
      muteHttpExceptions: true,
      followRedirects: false,
    });
    var code = res.getResponseCode();
    var text = res.getContentText();
    if (code === 200) {
      return JSON.parse(text);
    }
    var err = parseError(code, text);
    if (err.status === 'AUTHORIZATION_REQUIRED') {
      throw new Error(payload.user + ' must connect Google Chat first: open ' + err.authorizeUrl);
    }
    var retryable = code === 429 || code === 502 || code === 503 || code === 504;
    if (!retryable || attempt >= MAX_TRIES) {
      throw new Error(fn + ' answered ' + code + ' ' + err.status + ': ' + err.message);
    }
    Utilities.sleep(retryDelayMs(res, attempt));
  }
}

/** The ID-token variant's header. */
function idTokenHeaders() {
  var token = ScriptApp.getIdentityToken();
  if (!token) {
    throw new Error('No identity token: the manifest needs the "openid" scope; authorize the script again');
  }
  return { Authorization: 'Bearer ' + token };
}

/** The HMAC variant's header, for this body, now. */
function hmacHeaders(body, props) {
  var secret = (props.getProperty('CHATAUTH_WEBHOOK_SECRET') || '').trim();
  if (!secret) {
    throw new Error('Set the script property CHATAUTH_WEBHOOK_SECRET to one line of the WEBHOOK_SECRETS secret');
  }
  var t = String(Math.floor(Date.now() / 1000));
  return { 'X-Signature': signature(secret, t, body) };
}

/** X-Signature: t=<t>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>. */
function signature(secret, t, body) {
  var mac = Utilities.computeHmacSha256Signature(t + '.' + body, secret, Utilities.Charset.UTF_8);
  return 't=' + t + ',v1=' + toHex(mac);
}

/**
 * Hex of the bytes computeHmacSha256Signature returns. They are signed
 * (-128..127): each is masked to 0..255 and padded to two digits, or half
 * of them come out as "-80" or "f" and the signature never matches.
 */
function toHex(bytes) {
  return bytes.map(function (b) { return ('0' + (b & 0xff).toString(16)).slice(-2); }).join('');
}

/**
 * JSON with every character beyond ASCII written as a \uXXXX escape, so
 * the bytes signed and the bytes sent are the same whatever charset
 * UrlFetchApp and computeHmacSha256Signature pick. The function reads the
 * escapes back as the same text.
 */
function asciiJson(value) {
  return JSON.stringify(value).replace(/[\u007f-\uffff]/g, function (c) {
    return '\\u' + ('0000' + c.charCodeAt(0).toString(16)).slice(-4);
  });
}

function parseError(code, text) {
  try {
    var err = JSON.parse(text).error;
    if (err && err.status) {
      return err;
    }
  } catch (e) {
    // Not chatauth's JSON: a proxy or the platform answered.
  }
  return { status: 'HTTP_' + code, message: text.slice(0, 200) };
}

function retryDelayMs(res, attempt) {
  var headers = res.getHeaders();
  var retryAfter = parseInt(headers['Retry-After'] || headers['retry-after'], 10);
  var seconds = retryAfter > 0 ? Math.min(retryAfter, 60) : Math.min(Math.pow(2, attempt), 30);
  return seconds * 1000;
}
