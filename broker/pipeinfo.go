package broker

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"unicode/utf8"
)

// A pipe name is any bytes, but a JSON string holds only UTF-8: encoding/json
// would replace each invalid byte with U+FFFD and the name would be lost. So
// PipeInfo's JSON, in the LIST reply and in zpipes ls --json, carries a name
// that is not valid UTF-8 twice: "name" with the invalid bytes replaced, for
// people and for clients that only show it, and "name_base64", the standard
// base64 of the exact bytes, for clients that use it. A valid name has no
// "name_base64".

// pipeInfoFields is PipeInfo without its JSON methods.
type pipeInfoFields PipeInfo

// MarshalJSON writes the fields of PipeInfo, and "name_base64" when the name
// is not valid UTF-8.
func (p PipeInfo) MarshalJSON() ([]byte, error) {
	if utf8.ValidString(p.Name) {
		return json.Marshal(pipeInfoFields(p))
	}
	return json.Marshal(struct {
		pipeInfoFields
		NameBase64 string `json:"name_base64"`
	}{pipeInfoFields(p), base64.StdEncoding.EncodeToString([]byte(p.Name))})
}

// UnmarshalJSON reads what MarshalJSON writes: the name comes from
// "name_base64" when there is one.
func (p *PipeInfo) UnmarshalJSON(b []byte) error {
	var v struct {
		pipeInfoFields
		NameBase64 *string `json:"name_base64"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*p = PipeInfo(v.pipeInfoFields)
	if v.NameBase64 != nil {
		name, err := base64.StdEncoding.DecodeString(*v.NameBase64)
		if err != nil {
			return fmt.Errorf("name_base64: %w", err)
		}
		p.Name = string(name)
	}
	return nil
}
